from allauth.account.adapter import get_adapter
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.admin import UserAdmin

from tenants import services
from tenants.models import AccessKey, ApiToken, AuditEvent, Invitation, Membership, Quota, SshKey, Tenant, User


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's login under the same failed-login limits as /accounts/login/: it
    authenticates through allauth's adapter, which counts failures per IP and per account in
    allauth's own counters (ACCOUNT_RATE_LIMITS["login_failed"]), so neither door gives an
    attacker more tries than the other."""

    def clean(self):
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is not None and password:
            # Raises "Too many failed login attempts" once the limit is reached, even for the
            # right password; a success gives its try back.
            self.user_cache = get_adapter(self.request).authenticate(
                self.request, email=username, username=username, password=password
            )
            if self.user_cache is None:
                raise self.get_invalid_login_error()
            self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


admin.site.login_form = ThrottledAdminAuthenticationForm


@admin.register(User)
class PortalUserAdmin(UserAdmin):
    list_display = ["email", "is_staff", "is_active", "date_joined", "last_login"]
    list_filter = ["is_staff", "is_superuser", "is_active"]
    search_fields = ["email"]
    ordering = ["email"]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


class QuotaInline(admin.StackedInline):
    model = Quota
    can_delete = False


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "status", "personal", "billing_email", "created_at"]
    list_filter = ["status", "personal"]
    search_fields = ["name", "slug", "billing_email"]
    # Status changes go through billing's admin actions (billing.admin), never by editing the field.
    readonly_fields = ["status", "suspended_reason", "created_at"]
    inlines = [QuotaInline, MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__email", "tenant__name", "tenant__slug"]
    raw_id_fields = ["user", "tenant"]


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    list_display = ["tenant", "instances", "vcpus", "memory_mb", "disk_gb"]
    search_fields = ["tenant__name", "tenant__slug"]
    raw_id_fields = ["tenant"]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "tenant", "role", "created_at", "expires_at", "accepted_at"]
    list_filter = ["role", ("accepted_at", admin.EmptyFieldListFilter)]
    search_fields = ["email", "tenant__name"]
    exclude = ["token_hash"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "tenant", "user", "scope", "last_used_at", "revoked_at"]
    list_filter = ["scope", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix", "tenant__name", "user__email"]
    exclude = ["secret_hash"]
    actions = ["revoke"]

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        for token in queryset.filter(revoked_at__isnull=True):
            services.token_revoke(actor=None, token=token)


@admin.register(AccessKey)
class AccessKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "access_key_id", "tenant", "user", "scope", "last_used_at", "revoked_at"]
    list_filter = ["scope", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "access_key_id", "tenant__name", "user__email"]
    exclude = ["secret_sealed"]
    actions = ["revoke"]

    @admin.action(description="Revoke the selected access keys")
    def revoke(self, request, queryset):
        for key in queryset.filter(revoked_at__isnull=True):
            services.access_key_revoke(actor=None, key=key)


@admin.register(SshKey)
class SshKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "fingerprint", "created_at"]
    search_fields = ["name", "fingerprint", "tenant__name"]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "action", "target", "tenant", "user"]
    list_filter = ["action"]
    search_fields = ["target", "tenant__name", "user__email"]
    date_hierarchy = "created_at"

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # the audit trail is history: read only
