from types import SimpleNamespace

from allauth.account.adapter import DefaultAccountAdapter
from django.conf import settings

from tenants.services import personal_tenant_for


def _site() -> SimpleNamespace:
    """What allauth's e-mails call the site: the portal's name, not the request's host:port."""
    return SimpleNamespace(name=settings.PORTAL_NAME, domain=settings.PORTAL_NAME)


class AccountAdapter(DefaultAccountAdapter):
    def save_user(self, request, user, form, commit=True):
        user = super().save_user(request, user, form, commit=commit)
        if commit:
            personal_tenant_for(user)
        return user

    def format_email_subject(self, subject: str) -> str:
        return f"[{settings.PORTAL_NAME}] {subject}"

    def send_mail(self, template_prefix: str, email: str, context: dict) -> None:
        super().send_mail(template_prefix, email, {**context, "current_site": _site()})


def user_display(user) -> str:
    """How allauth names a user in pages and e-mails: the e-mail, never the generated username."""
    return user.email
