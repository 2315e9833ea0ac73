import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.deconstruct import deconstructible
from django.utils.translation import gettext_lazy


class User(AbstractUser):
    """A person. E-mail is the login; the username is filled in by allauth and never shown."""

    email = models.EmailField(unique=True)
    # The interface and mail language the user chose (a code of settings.LANGUAGES); empty: not
    # chosen yet, the browser's language applies and mails go out in the default language.
    language = models.CharField(max_length=16, blank=True, default="")


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    MEMBER = "member", "Member"
    ADMIN = "admin", "Admin"
    OWNER = "owner", "Owner"


# Each role can do everything the roles before it can.
ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


def role_at_least(role: str, needed: str) -> bool:
    return ROLE_RANK[Role(role)] >= ROLE_RANK[Role(needed)]


# Names that end up in e-mail headers (subjects) and single-line UI: no C0/C1 control characters
# (CR and LF among them) and no Unicode line or paragraph separators. Written so that the OpenAPI
# schema can carry it as a `pattern`.
ONE_LINE_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]*$"


@deconstructible
class OneLineValidator(RegexValidator):
    """The pattern must match the whole value: Python's `$` also matches before a final newline."""

    def __call__(self, value) -> None:
        if not self.regex.fullmatch(str(value)):
            raise ValidationError(self.message, code=self.code, params={"value": value})


validate_one_line = OneLineValidator(
    ONE_LINE_PATTERN, gettext_lazy("Control characters and line breaks are not allowed."), code="control_characters"
)


class Tenant(models.Model):
    """An organisation: it owns resources and pays for them."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, validators=[validate_one_line])
    slug = models.SlugField(max_length=60, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    billing_email = models.EmailField(blank=True)
    personal = models.BooleanField(default=False)
    suspended_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE

    @property
    def mail_language(self) -> str:
        """The language of the tenant's notices to an address without an account of its own
        (the billing address) or whose user never chose one (tenants.notices.languages_of): the
        saved choice of its first owner who made one, else the default."""
        chosen = (
            Membership.objects.filter(tenant=self, role=Role.OWNER)
            .exclude(user__language="")
            .values_list("user__language", flat=True)
            .first()
        )
        return chosen if chosen in dict(settings.LANGUAGES) else settings.LANGUAGE_CODE


class Membership(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "tenant"], name="membership_unique")]
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} as {self.role}"


class Invitation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices)
    # Only the SHA-256 of the single-use token is kept; the token itself travels in the e-mail.
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One open invitation per address and tenant; accepted ones stay as history.
            models.UniqueConstraint(
                fields=["tenant", "email"], condition=Q(accepted_at__isnull=True), name="invitation_open_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.email} to {self.tenant_id} as {self.role}"


class Quota(models.Model):
    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="quota")
    instances = models.PositiveIntegerField()
    vcpus = models.PositiveIntegerField()
    memory_mb = models.PositiveIntegerField()
    disk_gb = models.PositiveIntegerField()

    LIMITS = ("instances", "vcpus", "memory_mb", "disk_gb")

    def __str__(self) -> str:
        return f"quota of {self.tenant_id}"


class ApiToken(models.Model):
    class Scope(models.TextChoices):
        READ = "read", "Read only"
        WRITE = "read-write", "Read and write"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_tokens")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.WRITE)
    # The public prefix finds the row; only the SHA-256 of the secret is stored.
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class AccessKey(models.Model):
    """An EC2-style access key pair (portal/ec2/): `AKIA…` names the row, and the secret signs
    each request (AWS Signature Version 4). Checking a signature needs the secret itself, so it
    is stored encrypted with a key derived from SECRET_KEY (tenants/access_keys.py), not hashed.
    Same roles and scopes as ApiToken: the holder's role in the tenant, narrowed by the scope."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="access_keys")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="access_keys")
    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=16, choices=ApiToken.Scope.choices, default=ApiToken.Scope.WRITE)
    access_key_id = models.CharField(max_length=20, unique=True)
    secret_sealed = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.access_key_id})"

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class SshKey(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="ssh_keys")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    name = models.CharField(max_length=100)
    public_key = models.TextField()
    fingerprint = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="sshkey_name_unique"),
            models.UniqueConstraint(fields=["tenant", "fingerprint"], name="sshkey_fingerprint_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint})"


class AuditEvent(models.Model):
    """Who (a user, a token, or the system) did what to what, for every tenant-visible change."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(Tenant, null=True, on_delete=models.CASCADE, related_name="audit_events")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    token = models.ForeignKey(ApiToken, null=True, on_delete=models.SET_NULL)
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=200, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.action} {self.target}"


class Notice(models.Model):
    """One e-mail notice about one event, sent once: the unique (tenant, kind, key) row is taken
    in the transaction that sends the mail, so a second sender finds it and sends nothing."""

    class Kind(models.TextChoices):
        INVOICE_ISSUED = "invoice.issued", "Invoice issued"
        INVOICE_OVERDUE = "invoice.overdue", "Invoice overdue"
        SUSPENDED = "tenant.suspended", "Tenant suspended"
        INSTANCE_ERROR = "instance.error", "Instance in error"
        HOST_OUTAGE = "host.outage", "Host outage"

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="notices")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    # The event told about: an invoice id, a state or status log row id, an audit event id.
    key = models.CharField(max_length=100)
    recipients = models.JSONField(default=list, blank=True)
    sent_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-sent_at"]
        constraints = [models.UniqueConstraint(fields=["tenant", "kind", "key"], name="tenant_notice_once")]

    def __str__(self) -> str:
        return f"{self.kind} {self.key}"


class NoticeSettings(models.Model):
    """Which notices a person wants by e-mail (absent row: all of them)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notice_settings")
    incidents = models.BooleanField(
        default=True, help_text="An instance went into error; a host outage affects your instances."
    )
    billing = models.BooleanField(
        default=True, help_text="Invoices issued and overdue, suspension (tenant owners only)."
    )

    def __str__(self) -> str:
        return f"notice settings of {self.user_id}"
