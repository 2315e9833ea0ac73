"""E-mail notices to a tenant's people, each sent once.

Senders (billing.notices, compute.notices) run in a beat task and look for events that are
committed and not yet told; `send_once` takes the event's unique Notice row in the transaction
that sends the mail, so a notice is sent once however often or concurrently the scan runs, and
a mail server that is down leaves the row untaken for the next run. The footer links to the
notification settings page (a page to log in to, never a one-click unsubscribe link that a
mail scanner following links could trigger).
"""

from __future__ import annotations

import logging
import smtplib

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import translation

from tenants.models import Membership, Notice, NoticeSettings, Role, Tenant, User
from tenants.services import one_line

log = logging.getLogger(__name__)

INCIDENTS = "incidents"
BILLING = "billing"


def recipients(tenant: Tenant, topic: str) -> list[str]:
    """Who gets a notice on `topic`: billing goes to the owners and the billing address,
    incidents to every member; people who turned the topic off are left out."""
    memberships = Membership.objects.filter(tenant=tenant).select_related("user")
    if topic == BILLING:
        memberships = memberships.filter(role=Role.OWNER)
    opted_out = set(
        NoticeSettings.objects.filter(user__memberships__tenant=tenant, **{topic: False}).values_list(
            "user_id", flat=True
        )
    )
    emails = [m.user.email for m in memberships if m.user_id not in opted_out and m.user.is_active]
    if topic == BILLING and tenant.billing_email:
        emails.append(tenant.billing_email)
    return sorted({e.lower(): e for e in emails}.values())


def languages_of(emails: list[str], default: str) -> dict[str, list[str]]:
    """`emails` grouped by the language to write to each in: the saved choice (User.language) of
    the account with that address, else `default` (an address without an account, such as a
    tenant's billing address, or a user who never chose)."""
    chosen = {}
    if emails:
        matching = Q()
        for email in emails:
            matching |= Q(email__iexact=email)
        chosen = {
            email.lower(): language
            for email, language in User.objects.filter(matching).values_list("email", "language")
        }
    groups: dict[str, list[str]] = {}
    for email in emails:
        language = chosen.get(email.lower(), "")
        groups.setdefault(language if language in dict(settings.LANGUAGES) else default, []).append(email)
    return groups


def settings_url() -> str:
    return f"{settings.PORTAL_BASE_URL}{reverse('notice-settings')}"


def send_once(*, tenant: Tenant, kind: str, key: str, topic: str, template: str, context: dict) -> bool:
    """Send the notice `kind` about event `key` to the tenant's people once; True if sent now.

    `template` names portal/templates/mail/<template>_subject.txt and _body.txt. Each recipient
    reads it in their own language (one message per language; `mail_language` in the templates),
    an address without an account in the tenant's (Tenant.mail_language)."""
    if Notice.objects.filter(tenant=tenant, kind=kind, key=key).exists():
        return False
    to = recipients(tenant, topic)
    context = {
        **context,
        "tenant": tenant,
        "portal_name": settings.PORTAL_NAME,
        "portal_url": settings.PORTAL_BASE_URL,
        "settings_url": settings_url(),
    }
    messages = []
    for language, group in sorted(languages_of(to, tenant.mail_language).items()):
        with translation.override(language):
            text = {**context, "mail_language": language}
            subject = one_line(render_to_string(f"mail/{template}_subject.txt", text))
            body = render_to_string(f"mail/{template}_body.txt", text)
        messages.append(EmailMessage(f"[{settings.PORTAL_NAME}] {subject}", body, settings.DEFAULT_FROM_EMAIL, group))
    try:
        with transaction.atomic():
            # A concurrent sender waits here on the unique index, then finds the row taken.
            Notice.objects.create(tenant=tenant, kind=kind, key=key, recipients=to)
            if messages:
                # One connection for all; a server failing half-way rolls the row back and the
                # next run sends again (a few recipients may then get the notice twice).
                get_connection().send_messages(messages)
    except IntegrityError:
        return False
    except (smtplib.SMTPException, OSError) as exc:
        log.warning("cannot send the %s notice %s of %s now: %s", kind, key, tenant.slug, exc)
        return False
    return True
