"""Tenant pages: members and invitations, quota, API tokens, SSH keys, billing; switching tenant."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET, require_POST

from billing import selectors as billing_selectors
from billing.models import Invoice
from compute.selectors import tenant_resource_usage
from portal.forms import (
    ROLE_CHOICES,
    AccessKeyForm,
    InvitationForm,
    MemberRoleForm,
    NoticeSettingsForm,
    SshKeyForm,
    TokenForm,
)
from portal.views.guards import REFUSALS, require_role, tenant_page, unchanged, version_of, versioned, why
from tenants import services as tenant_services
from tenants.access import Actor, get_scoped, scoped, switch_tenant
from tenants.models import AccessKey, ApiToken, AuditEvent, Invitation, Membership, NoticeSettings, Quota, Role, SshKey

QUOTA_LABELS = {"instances": _("Instances"), "vcpus": _("vCPUs"), "memory_mb": _("Memory"), "disk_gb": _("Disk")}
ACTIVITY_PAGE = 50


@login_required
def invitation_accept(request, token: str):
    """GET shows what the invitation is for; only the POST accepts it (link scanners GET)."""
    if request.method == "POST":
        try:
            membership = tenant_services.invitation_accept(user=request.user, token=token)
        except tenant_services.InvitationInvalid as exc:
            return render(request, "portal/invitation.html", {"error": str(exc)}, status=400)
        switch_tenant(request, membership.tenant_id)
        messages.success(
            request,
            _("You joined %(tenant)s as %(role)s.") % {"tenant": membership.tenant.name, "role": membership.role},
        )
        return redirect("home")
    return render(request, "portal/invitation.html", {"token": token})


@login_required
@require_POST
def tenant_switch(request):
    tenant_id = request.POST.get("tenant", "")
    try:
        actor = switch_tenant(request, tenant_id)
    except (Http404, ValueError, ValidationError):
        messages.error(request, _("You are not a member of that tenant."))
    else:
        messages.info(request, _("You now act for %(tenant)s.") % {"tenant": actor.tenant.name})
    return redirect(
        request.POST.get("next")
        if url_has_allowed_host_and_scheme(request.POST.get("next"), allowed_hosts={request.get_host()})
        else "home"
    )


# -- members and invitations ---------------------------------------------------------------------


def _members_page(request, actor: Actor, form: InvitationForm | None = None, status: int = 200):
    memberships = scoped(actor, Membership.objects.select_related("user")).order_by("user__email")
    invitations = scoped(actor, Invitation.objects.filter(accepted_at__isnull=True)).select_related("invited_by")
    return render(
        request,
        "portal/tenant/members.html",
        {
            "actor": actor,
            "memberships": memberships,
            "invitations": invitations,
            "form": form or InvitationForm(actor=actor),
            "can_manage": actor.may_write(Role.ADMIN),
            "roles": ROLE_CHOICES,
        },
        status=status,
    )


@require_GET
@tenant_page
def members(request, actor: Actor):
    return _members_page(request, actor)


@require_POST
@tenant_page
def invitation_create(request, actor: Actor):
    require_role(actor, Role.ADMIN)
    form = InvitationForm(request.POST, actor=actor)
    if form.is_valid():
        try:
            tenant_services.invitation_create(actor=actor, **form.cleaned_data)
        except REFUSALS as exc:
            form.add_error("email", why(exc))
        else:
            messages.success(request, _("Invitation sent to %(email)s.") % {"email": form.cleaned_data["email"]})
            return redirect("tenant-members")
    return _members_page(request, actor, form, status=400)


@require_POST
@tenant_page
def invitation_revoke(request, actor: Actor, pk):
    require_role(actor, Role.ADMIN)
    invitation = get_scoped(actor, Invitation.objects, pk)
    try:
        tenant_services.invitation_revoke(actor=actor, invitation=invitation)
    except REFUSALS as exc:
        messages.error(request, why(exc))
    else:
        messages.success(request, _("The invitation of %(email)s is revoked.") % {"email": invitation.email})
    return redirect("tenant-members")


@require_POST
@tenant_page
def member_role(request, actor: Actor, pk):
    require_role(actor, Role.ADMIN)
    membership = get_scoped(actor, Membership.objects.select_related("user"), pk)
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Choose one of the roles."))
        return redirect("tenant-members")
    try:
        tenant_services.membership_set_role(actor=actor, membership=membership, role=form.cleaned_data["role"])
    except REFUSALS as exc:
        messages.error(request, why(exc))
    else:
        role = form.cleaned_data["role"]
        messages.success(
            request,
            _("%(email)s is now %(role)s.")
            % {"email": membership.user.email, "role": tenant_services.ROLE_WORDS.get(role, role)},
        )
    return redirect("tenant-members")


@require_POST
@tenant_page
def member_remove(request, actor: Actor, pk):
    require_role(actor, Role.ADMIN)
    membership = get_scoped(actor, Membership.objects.select_related("user"), pk)
    try:
        tenant_services.membership_remove(actor=actor, membership=membership)
    except REFUSALS as exc:
        messages.error(request, why(exc))
        return redirect("tenant-members")
    messages.success(
        request,
        _("%(email)s was removed from %(tenant)s.") % {"email": membership.user.email, "tenant": actor.tenant.name},
    )
    return redirect("home" if membership.user_id == request.user.pk else "tenant-members")


# -- quota -----------------------------------------------------------------------------------------


def _quota_rows(actor: Actor) -> list[dict]:
    limits = Quota.objects.filter(tenant=actor.tenant).first()
    usage = tenant_resource_usage(actor.tenant)
    return [
        {"name": name, "label": label, "used": usage[name], "limit": getattr(limits, name, 0)}
        for name, label in QUOTA_LABELS.items()
    ]


@require_GET
@tenant_page
def quota(request, actor: Actor):
    rows = _quota_rows(actor)
    version = version_of(actor.tenant.pk, rows)
    return versioned(
        render(request, "portal/tenant/quota.html", {"actor": actor, "rows": rows, "version": version}), version
    )


@require_GET
@tenant_page
def quota_live(request, actor: Actor):
    """htmx: the quota cards, polled (an unchanged set is a 304)."""
    rows = _quota_rows(actor)
    version = version_of(actor.tenant.pk, rows)
    if not_modified := unchanged(request, version):
        return not_modified
    return versioned(render(request, "portal/tenant/_quota.html", {"rows": rows, "version": version}), version)


# -- API tokens ------------------------------------------------------------------------------------

# How long a token form's marker is remembered (a reload days later resends it too, but then
# the page has long shown its warning).
TOKEN_FORM_SECONDS = 24 * 3600


def _tokens_page(
    request,
    actor: Actor,
    form: TokenForm | None = None,
    *,
    secret: str = "",
    key_form: AccessKeyForm | None = None,
    new_key: tuple[str, str] | None = None,
    status: int = 200,
):
    tokens = scoped(actor, ApiToken.objects.select_related("user"))
    if form is None:  # a new form, with a new marker; a form shown again keeps its own
        form = TokenForm(initial={"once": secrets.token_urlsafe(16)})
    if key_form is None:
        key_form = AccessKeyForm(initial={"once": secrets.token_urlsafe(16)})
    return render(
        request,
        "portal/tenant/tokens.html",
        {
            "actor": actor,
            "tokens": tokens,
            "form": form,
            "secret": secret,
            "access_keys": scoped(actor, AccessKey.objects.select_related("user")),
            "key_form": key_form,
            "new_key": new_key,
            "ec2_region": settings.EC2_REGION,
            "can_manage": actor.may_write(Role.ADMIN),
        },
        status=status,
    )


@tenant_page
def tokens(request, actor: Actor):
    if request.method != "POST":
        return _tokens_page(request, actor)
    require_role(actor, Role.ADMIN)
    form = TokenForm(request.POST)
    if not form.is_valid():
        return _tokens_page(request, actor, form, status=400)
    marker = f"token-form:{actor.tenant.pk}:{form.cleaned_data['once']}"
    if form.cleaned_data["once"] and not cache.add(marker, True, timeout=TOKEN_FORM_SECONDS):
        messages.warning(
            request,
            _(
                "This form was already sent and its token made; its secret was shown that once. "
                "If you did not copy it, revoke that token and make a new one."
            ),
        )
        return _tokens_page(request, actor, status=409)
    try:
        token, secret = tenant_services.token_create(
            actor=actor, name=form.cleaned_data["name"], scope=form.cleaned_data["scope"], expires_at=form.expires_at()
        )
    except REFUSALS as exc:
        cache.delete(marker)  # nothing was made: the corrected form may be sent again
        form.add_error("expires_on", why(exc))
        return _tokens_page(request, actor, form, status=400)
    # The secret is rendered into this one response and kept nowhere: a reload cannot show it again.
    messages.success(
        request, _("Token %(name)s created. Copy its secret now: it is shown only once.") % {"name": token.name}
    )
    return _tokens_page(request, actor, secret=secret, status=201)


@require_POST
@tenant_page
def token_revoke(request, actor: Actor, pk):
    require_role(actor, Role.ADMIN)
    token = get_scoped(actor, ApiToken.objects, pk)
    tenant_services.token_revoke(actor=actor, token=token)
    messages.success(request, _("Token %(name)s is revoked.") % {"name": token.name})
    return redirect("tenant-tokens")


# -- EC2 access keys -------------------------------------------------------------------------------


@require_POST
@tenant_page
def access_key_create(request, actor: Actor):
    require_role(actor, Role.ADMIN)
    form = AccessKeyForm(request.POST)
    if not form.is_valid():
        return _tokens_page(request, actor, key_form=form, status=400)
    marker = f"access-key-form:{actor.tenant.pk}:{form.cleaned_data['once']}"
    if form.cleaned_data["once"] and not cache.add(marker, True, timeout=TOKEN_FORM_SECONDS):
        messages.warning(
            request,
            _(
                "This form was already sent and its access key made; its secret was shown that once. "
                "If you did not copy it, revoke that key and make a new one."
            ),
        )
        return _tokens_page(request, actor, status=409)
    key, secret = tenant_services.access_key_create(
        actor=actor, name=form.cleaned_data["name"], scope=form.cleaned_data["scope"]
    )
    messages.success(
        request,
        _("Access key %(name)s created. Copy its secret now: it is shown only once.") % {"name": key.name},
    )
    return _tokens_page(request, actor, new_key=(key.access_key_id, secret), status=201)


@require_POST
@tenant_page
def access_key_revoke(request, actor: Actor, pk):
    require_role(actor, Role.ADMIN)
    key = get_scoped(actor, AccessKey.objects, pk)
    tenant_services.access_key_revoke(actor=actor, key=key)
    messages.success(request, _("Access key %(name)s is revoked.") % {"name": key.name})
    return redirect("tenant-tokens")


# -- SSH keys --------------------------------------------------------------------------------------


@tenant_page
def ssh_keys(request, actor: Actor):
    form = SshKeyForm()
    status = 200
    if request.method == "POST":
        require_role(actor, Role.MEMBER)
        form = SshKeyForm(request.POST)
        if form.is_valid():
            try:
                key = tenant_services.sshkey_create(actor=actor, **form.cleaned_data)
            except REFUSALS as exc:
                form.add_error("public_key", why(exc))
            else:
                messages.success(
                    request,
                    _("Key %(name)s added (%(fingerprint)s).") % {"name": key.name, "fingerprint": key.fingerprint},
                )
                return redirect("tenant-ssh-keys")
        status = 400
    keys = scoped(actor, SshKey.objects.select_related("created_by"))
    return render(
        request,
        "portal/tenant/ssh_keys.html",
        {"actor": actor, "keys": keys, "form": form, "can_manage": actor.may_write(Role.MEMBER)},
        status=status,
    )


@tenant_page
def ssh_key_delete(request, actor: Actor, pk):
    """GET asks first; POST deletes."""
    key = get_scoped(actor, SshKey.objects, pk)
    if request.method != "POST":
        return render(request, "portal/tenant/ssh_key_delete.html", {"actor": actor, "key": key})
    require_role(actor, Role.MEMBER)
    tenant_services.sshkey_delete(actor=actor, key=key)
    messages.success(request, _("Key %(name)s deleted. Instances that have it keep it.") % {"name": key.name})
    return redirect("tenant-ssh-keys")


# -- billing ---------------------------------------------------------------------------------------


@require_GET
@tenant_page
def billing(request, actor: Actor):
    """Month to date per instance (cost so far, traffic against allowance) and the invoices.
    Money is the owner's business, as in the API."""
    require_role(actor, Role.OWNER)
    month = billing_selectors.month_to_date(tenant=actor.tenant)
    invoices = scoped(actor, Invoice.objects.exclude(state=Invoice.State.DRAFT))
    return render(request, "portal/tenant/billing.html", {"actor": actor, "month": month, "invoices": invoices})


# -- activity log --------------------------------------------------------------------------------


@require_GET
@tenant_page
def activity(request, actor: Actor):
    """Who did what to what in this tenant, newest first: its audit events and nobody else's."""
    events = scoped(actor, AuditEvent.objects.select_related("user", "token")).order_by("-created_at", "-id")
    page = Paginator(events, ACTIVITY_PAGE).get_page(request.GET.get("page"))
    return render(request, "portal/tenant/activity.html", {"actor": actor, "page": page})


# -- e-mail notices ------------------------------------------------------------------------------


@login_required
def notice_settings(request):
    """The person's own choice of e-mail notices (the link at the foot of every notice)."""
    current = NoticeSettings.objects.filter(user=request.user).first() or NoticeSettings(user=request.user)
    if request.method == "POST":
        form = NoticeSettingsForm(request.POST, instance=current)
        if form.is_valid():
            form.save()
            messages.success(request, _("Your e-mail notice settings are saved."))
            return redirect("notice-settings")
        status = 400
    else:
        form, status = NoticeSettingsForm(instance=current), 200
    return render(request, "portal/notice_settings.html", {"form": form}, status=status)
