from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from tenants.models import ApiToken, AuditEvent, Invitation, Membership, Quota, SshKey, Tenant, User


@admin.register(User)
class PortalUserAdmin(UserAdmin):
    list_display = ["email", "is_staff", "is_active", "date_joined", "last_login"]
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
    inlines = [QuotaInline, MembershipInline]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "tenant", "role", "created_at", "expires_at", "accepted_at"]
    search_fields = ["email", "tenant__name"]
    exclude = ["token_hash"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "tenant", "user", "scope", "last_used_at", "revoked_at"]
    list_filter = ["scope"]
    search_fields = ["name", "prefix", "tenant__name", "user__email"]
    exclude = ["secret_hash"]


@admin.register(SshKey)
class SshKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "fingerprint", "created_at"]
    search_fields = ["name", "fingerprint", "tenant__name"]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "action", "target", "tenant", "user"]
    list_filter = ["action"]
    search_fields = ["target", "tenant__name", "user__email"]
