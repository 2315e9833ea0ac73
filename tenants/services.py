"""Writes for tenants, members, invitations, tokens, access keys and SSH keys.

Views, the API, tasks and commands call these; none of them saves these rows directly.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import smtplib
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone, translation
from django.utils.text import slugify
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from base.errors import Conflict, Invalid, Unavailable
from tenants.access import Actor
from tenants.access_keys import new_key_material, seal
from tenants.models import (
    AccessKey,
    ApiToken,
    AuditEvent,
    Invitation,
    Membership,
    Quota,
    Role,
    SshKey,
    Tenant,
    User,
    validate_one_line,
)
from tenants.sshkeys import parse_public_key
from tenants.tokens import hash_secret, new_token_material

log = logging.getLogger(__name__)


class InvitationInvalid(Invalid):
    """The invitation token names no open invitation for this user."""

    def __init__(self, message: str):
        super().__init__("token", message)


def audit(actor: Actor | None, action: str, *, tenant: Tenant | None = None, target: str = "", **detail) -> AuditEvent:
    """Record who did what. `actor=None` means the system did it."""
    event = audit_event(actor, action, tenant=tenant, target=target, **detail)
    event.save()
    return event


def audit_event(
    actor: Actor | None, action: str, *, tenant: Tenant | None = None, target: str = "", **detail
) -> AuditEvent:
    """The record `audit` writes, not written yet (for a caller that writes several rows at once)."""
    if actor is not None and actor.access_key is not None:
        detail = {"access_key": actor.access_key.access_key_id, **detail}
    return AuditEvent(
        tenant=tenant or (actor.tenant if actor else None),
        user=actor.user if actor else None,
        token=actor.token if actor else None,
        action=action,
        target=target[:200],
        detail=detail,
    )


def one_line(text: str) -> str:
    """Text made safe for an e-mail header: every run of whitespace, line breaks and control
    characters becomes one space (Django refuses a header with CR or LF in it)."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _check_name(name: str, field: str = "name") -> None:
    """Names go into e-mail subjects; the API's serializers refuse bad ones first, this guards
    every other caller."""
    try:
        validate_one_line(name)
    except ValidationError as exc:
        raise ValidationError({field: exc.messages}) from None


def _unique_slug(name: str) -> str:
    base = slugify(name)[:40] or "tenant"
    slug = base
    while Tenant.objects.filter(slug=slug).exists():
        slug = f"{base}-{secrets.token_hex(3)}"
    return slug


@transaction.atomic
def tenant_create(*, name: str, owner: User, personal: bool = False, billing_email: str = "") -> Tenant:
    """A tenant with its owner's membership and the default quota."""
    _check_name(name)
    for _attempt in range(5):
        try:
            with transaction.atomic():
                tenant = Tenant.objects.create(
                    name=name[:100],
                    slug=_unique_slug(name),
                    personal=personal,
                    billing_email=billing_email or owner.email,
                )
            break
        except IntegrityError:  # two signups raced for one slug; the loop picks another
            continue
    else:
        raise Conflict(_("Could not choose a unique tenant slug; try another name."))
    Membership.objects.create(user=owner, tenant=tenant, role=Role.OWNER)
    Quota.objects.create(tenant=tenant, **settings.DEFAULT_QUOTA)
    audit(None, "tenant.create", tenant=tenant, target=tenant.slug, owner=owner.email)
    return tenant


def personal_tenant_for(user: User) -> Tenant:
    """Every user owns a personal tenant, made at signup (or now, for users made otherwise)."""
    membership = Membership.objects.filter(user=user, tenant__personal=True, role=Role.OWNER).first()
    if membership:
        return membership.tenant
    label = one_line(user.get_full_name()) or user.email.split("@")[0] or "personal"
    return tenant_create(name=f"{label}'s projects", owner=user, personal=True)


@transaction.atomic
def tenant_update(*, actor: Actor, name: str | None = None, billing_email: str | None = None) -> Tenant:
    tenant = actor.tenant
    if name is not None:
        _check_name(name)
        tenant.name = name
    if billing_email is not None:
        tenant.billing_email = billing_email
    tenant.save(update_fields=["name", "billing_email"])
    audit(actor, "tenant.update", target=tenant.slug, name=tenant.name, billing_email=tenant.billing_email)
    return tenant


def _hash_invitation(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# A role as a word in a sentence (the English is the role's code).
ROLE_WORDS = {
    Role.VIEWER: gettext_lazy("viewer"),
    Role.MEMBER: gettext_lazy("member"),
    Role.ADMIN: gettext_lazy("admin"),
    Role.OWNER: gettext_lazy("owner"),
}


def _invitation_language(email: str, inviter: User) -> str:
    """The invitation is written in the language the invitee chose, if they have an account and
    chose one; else in the inviter's saved choice, else in the language the inviter uses now."""
    supported = dict(settings.LANGUAGES)
    invitee = User.objects.filter(email__iexact=email).values_list("language", flat=True).first()
    for language in (invitee, inviter.language):
        if language in supported:
            return language
    current = translation.get_language()
    return current if current in supported else settings.LANGUAGE_CODE


@transaction.atomic
def invitation_create(*, actor: Actor, email: str, role: str) -> tuple[Invitation, str]:
    """An invitation and its single-use token (returned once, e-mailed, stored hashed)."""
    email = email.strip().lower()
    if role == Role.OWNER and not actor.has_role(Role.OWNER):
        raise Conflict(_("Only an owner can invite another owner."))
    if Membership.objects.filter(tenant=actor.tenant, user__email__iexact=email).exists():
        raise Conflict(_("%(email)s is already a member of this tenant.") % {"email": email})
    if Invitation.objects.filter(tenant=actor.tenant, email=email, accepted_at__isnull=True).exists():
        raise Conflict(_("%(email)s already has an open invitation; revoke it first.") % {"email": email})
    token = secrets.token_urlsafe(32)
    try:
        # The check above can race with a concurrent invite; the constraint settles it.
        with transaction.atomic():
            invitation = Invitation.objects.create(
                tenant=actor.tenant,
                email=email,
                role=role,
                token_hash=_hash_invitation(token),
                invited_by=actor.user,
                expires_at=timezone.now() + timedelta(hours=settings.INVITATION_TTL_HOURS),
            )
    except IntegrityError:
        raise Conflict(_("%(email)s already has an open invitation; revoke it first.") % {"email": email}) from None
    audit(actor, "invitation.create", target=email, role=role)
    link = f"{settings.PORTAL_BASE_URL}/invitations/accept/{token}"
    # The row and its e-mail go together: the mail is the last step of the transaction, so a
    # mail that cannot be sent rolls the row back and the invitation can simply be sent again.
    # (A commit failing after the mail left makes its link answer "does not exist".)
    with translation.override(_invitation_language(email, actor.user)):
        subject = one_line(_("You are invited to %(tenant)s") % {"tenant": actor.tenant.name})
        body = _(
            "%(inviter)s invited you to join %(tenant)s as %(role)s.\n\n"
            "Accept the invitation: %(link)s\n\nThe link works once and expires in %(hours)s hours."
        ) % {
            "inviter": actor.user.email,
            "tenant": actor.tenant.name,
            "role": ROLE_WORDS.get(role, role),
            "link": link,
            "hours": settings.INVITATION_TTL_HOURS,
        }
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [email])
    except (smtplib.SMTPException, OSError) as exc:
        log.warning("cannot send the invitation of %s to %s: %s", actor.tenant.slug, email, exc)
        raise Unavailable(_("The invitation e-mail cannot be sent now; nothing was saved. Try again later.")) from None
    return invitation, token


@transaction.atomic
def invitation_revoke(*, actor: Actor, invitation: Invitation) -> None:
    if invitation.accepted_at is not None:
        raise Conflict(_("This invitation was already accepted."))
    invitation.delete()
    audit(actor, "invitation.revoke", target=invitation.email)


@transaction.atomic
def invitation_accept(*, user: User, token: str) -> Membership:
    """Join the tenant. The invitation is for one e-mail address and works once."""
    invitation = (
        Invitation.objects.select_for_update()
        .select_related("tenant")
        .filter(token_hash=_hash_invitation(token))
        .first()
    )
    if invitation is None or invitation.accepted_at is not None:
        raise InvitationInvalid(_("This invitation does not exist or was already used."))
    if invitation.expires_at <= timezone.now():
        raise InvitationInvalid(_("This invitation has expired; ask for a new one."))
    if invitation.email.lower() != user.email.lower():
        raise InvitationInvalid(_("This invitation was sent to another e-mail address."))
    membership, created = Membership.objects.get_or_create(
        user=user, tenant=invitation.tenant, defaults={"role": invitation.role}
    )
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    audit(
        Actor(user, invitation.tenant, membership.role),
        "membership.join",
        target=user.email,
        role=membership.role,
    )
    return membership


def _owner_count(tenant: Tenant) -> int:
    return Membership.objects.filter(tenant=tenant, role=Role.OWNER).count()


@transaction.atomic
def membership_set_role(*, actor: Actor, membership: Membership, role: str) -> Membership:
    Tenant.objects.select_for_update().get(pk=actor.tenant.pk)  # serialises owner changes
    if Role.OWNER in (role, membership.role) and not actor.has_role(Role.OWNER):
        raise Conflict(_("Only an owner can grant or take away the owner role."))
    if membership.role == Role.OWNER and role != Role.OWNER and _owner_count(actor.tenant) == 1:
        raise Conflict(_("A tenant needs at least one owner."))
    membership.role = role
    membership.save(update_fields=["role"])
    audit(actor, "membership.role", target=membership.user.email, role=role)
    return membership


@transaction.atomic
def membership_remove(*, actor: Actor, membership: Membership) -> None:
    Tenant.objects.select_for_update().get(pk=actor.tenant.pk)
    if membership.role == Role.OWNER:
        if not actor.has_role(Role.OWNER):
            raise Conflict(_("Only an owner can remove an owner."))
        if _owner_count(actor.tenant) == 1:
            raise Conflict(_("A tenant needs at least one owner."))
    # The member's tokens for this tenant die with the membership.
    for credentials in (ApiToken, AccessKey):
        credentials.objects.filter(tenant=actor.tenant, user=membership.user, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
    membership.delete()
    audit(actor, "membership.remove", target=membership.user.email)


@transaction.atomic
def token_create(*, actor: Actor, name: str, scope: str, expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """A token for the actor's tenant; the full secret is returned once and never stored."""
    if expires_at is not None and expires_at <= timezone.now():
        raise Invalid("expires_at", _("expires_at must be in the future."))
    prefix, secret, full = new_token_material()
    token = ApiToken.objects.create(
        tenant=actor.tenant,
        user=actor.user,
        name=name,
        scope=scope,
        prefix=prefix,
        secret_hash=hash_secret(secret),
        expires_at=expires_at,
    )
    audit(actor, "token.create", target=name, scope=scope, prefix=prefix)
    return token, full


@transaction.atomic
def token_revoke(*, actor: Actor, token: ApiToken) -> ApiToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit(actor, "token.revoke", target=token.name, prefix=token.prefix)
    return token


@transaction.atomic
def access_key_create(
    *, actor: Actor, name: str, scope: str, expires_at: datetime | None = None
) -> tuple[AccessKey, str]:
    """An EC2 access key for the actor's tenant, acting as the actor's user; the secret is
    returned once (and kept only sealed, see tenants/access_keys.py)."""
    if expires_at is not None and expires_at <= timezone.now():
        raise Invalid("expires_at", "expires_at must be in the future.")
    if scope not in ApiToken.Scope.values:
        raise Invalid("scope", f"One of {', '.join(ApiToken.Scope.values)}.")
    key_id, secret = new_key_material()
    key = AccessKey.objects.create(
        tenant=actor.tenant,
        user=actor.user,
        name=name,
        scope=scope,
        access_key_id=key_id,
        secret_sealed=seal(secret),
        expires_at=expires_at,
    )
    audit(actor, "access_key.create", target=name, scope=scope, access_key_id=key_id)
    return key, secret


@transaction.atomic
def access_key_revoke(*, actor: Actor | None, key: AccessKey) -> AccessKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit(actor, "access_key.revoke", tenant=key.tenant, target=key.name, access_key_id=key.access_key_id)
    return key


@transaction.atomic
def sshkey_create(*, actor: Actor, name: str, public_key: str) -> SshKey:
    parsed = parse_public_key(public_key)
    if SshKey.objects.filter(tenant=actor.tenant, fingerprint=parsed.fingerprint).exists():
        raise Conflict(_("This key is already registered in this tenant."))
    if SshKey.objects.filter(tenant=actor.tenant, name=name).exists():
        raise Conflict(_("There is already a key named %(name)s.") % {"name": repr(name)})
    try:
        # A concurrent upload of the same key or name passes the checks above; the unique
        # constraints settle it.
        with transaction.atomic():
            key = SshKey.objects.create(
                tenant=actor.tenant,
                created_by=actor.user,
                name=name,
                public_key=parsed.canonical,
                fingerprint=parsed.fingerprint,
            )
    except IntegrityError:
        raise Conflict(_("This key or key name is already registered in this tenant.")) from None
    audit(actor, "sshkey.create", target=name, fingerprint=parsed.fingerprint)
    return key


@transaction.atomic
def sshkey_delete(*, actor: Actor, key: SshKey) -> None:
    key.delete()
    audit(actor, "sshkey.delete", target=key.name, fingerprint=key.fingerprint)


def _audit_tenant(actor: Actor | User | None, action: str, tenant: Tenant, **detail) -> AuditEvent:
    """Audit an operator's or the system's action on a tenant: a staff User is recorded as the user."""
    if isinstance(actor, User):
        return AuditEvent.objects.create(
            tenant=tenant, user=actor, action=action, target=tenant.slug[:200], detail=detail
        )
    return audit(actor, action, tenant=tenant, target=tenant.slug, **detail)


@transaction.atomic
def tenant_set_suspended(*, actor: Actor | User | None, tenant: Tenant, reason: str) -> Tenant:
    """Mark a tenant suspended: it can no longer create or start instances. Only the status
    flips here; billing.suspension.tenant_suspend also stops its instances.

    `actor` is the operator (a staff User, from the admin), an Actor, or None for the system.
    """
    locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
    locked.status = Tenant.Status.SUSPENDED
    locked.suspended_reason = reason[:200]
    locked.save(update_fields=["status", "suspended_reason"])
    _audit_tenant(actor, "tenant.suspend", locked, reason=locked.suspended_reason)
    return locked


@transaction.atomic
def tenant_set_active(*, actor: Actor | User | None, tenant: Tenant) -> Tenant:
    """Mark a suspended tenant active again; its stopped instances stay stopped
    (billing.suspension.tenant_reactivate starts them)."""
    locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
    if locked.status == Tenant.Status.ACTIVE:
        return locked
    locked.status = Tenant.Status.ACTIVE
    locked.suspended_reason = ""
    locked.save(update_fields=["status", "suspended_reason"])
    _audit_tenant(actor, "tenant.reactivate", locked)
    return locked
