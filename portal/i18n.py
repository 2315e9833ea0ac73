"""The interface language: Django's cookie for everyone, and for a logged-in user their saved
choice (User.language), which follows them to another browser and decides the language of the
mails they get.

The choice is saved on the User row, not in a profile: it is one short column read on every
request with the user, which AuthenticationMiddleware loads anyway.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, pgettext_lazy
from django.views.i18n import set_language as django_set_language

from base.errors import QuotaExceeded, Refused
from compute import security_groups

SUPPORTED = {code for code, _ in settings.LANGUAGES}


def language_of(user) -> str:
    """The language to address `user` in: their saved choice, else the site's default."""
    saved = getattr(user, "language", "")
    return saved if saved in SUPPORTED else settings.LANGUAGE_CODE


def refusal_text(exc: Refused) -> str:
    """The sentence of a service's refusal (base.errors) in the active language. Services mark
    their messages for translation; base.errors is plain Python, so the quota sentence it writes
    is translated here from its parts (the English is the same, byte for byte)."""
    if isinstance(exc, QuotaExceeded):
        return _("Quota exceeded for %(resource)s: %(in_use)s in use + %(requested)s requested > limit %(limit)s.") % {
            "resource": exc.resource,
            "in_use": exc.in_use,
            "requested": exc.requested,
            "limit": exc.limit,
        }
    return str(exc.message)


class UserLanguageMiddleware:
    """After LocaleMiddleware and AuthenticationMiddleware: a logged-in user's saved language
    replaces what the cookie or the browser asked for, so the choice applies right after login;
    the cookie is brought in line so the login and logout pages keep it too."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        saved = getattr(user, "language", "") if user is not None and user.is_authenticated else ""
        if saved in SUPPORTED and saved != request.LANGUAGE_CODE:
            translation.activate(saved)
            request.LANGUAGE_CODE = saved
        response = self.get_response(request)
        # Logging in happens inside this request: read the user again for the cookie.
        user = getattr(request, "user", None)
        saved = getattr(user, "language", "") if user is not None and user.is_authenticated else ""
        if saved in SUPPORTED and request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME) != saved:
            _set_cookie(response, saved)
        response.headers.setdefault("Content-Language", translation.get_language() or settings.LANGUAGE_CODE)
        return response


def _set_cookie(response, code: str) -> None:
    response.set_cookie(
        settings.LANGUAGE_COOKIE_NAME,
        code,
        max_age=settings.LANGUAGE_COOKIE_AGE,
        path=settings.LANGUAGE_COOKIE_PATH,
        domain=settings.LANGUAGE_COOKIE_DOMAIN,
        secure=settings.LANGUAGE_COOKIE_SECURE,
        httponly=settings.LANGUAGE_COOKIE_HTTPONLY,
        samesite=settings.LANGUAGE_COOKIE_SAMESITE,
    )


def set_language(request):
    """Django's set_language (POST, CSRF-checked; sets the cookie and redirects to `next`), and
    for a logged-in user the choice saved on their row."""
    response = django_set_language(request)
    code = request.POST.get("language", "")
    user = request.user
    if request.method == "POST" and code in SUPPORTED and user.is_authenticated and user.language != code:
        user.language = code
        user.save(update_fields=["language"])
    return response


# compute.security_groups names and describes each tenant's default group in English; pages show
# those two in the reader's language (a name or description the tenant gave stays as given).
DEFAULT_GROUP_NAME = pgettext_lazy("security group", "default")
DEFAULT_GROUP_DESCRIPTION = gettext_lazy("SSH and ICMP from anywhere, all traffic between members, everything out")


def group_name(group) -> str:
    if group.is_default and group.name == security_groups.DEFAULT_NAME:
        return str(DEFAULT_GROUP_NAME)
    return group.name


def group_description(group) -> str:
    if group.is_default and group.description == security_groups.DEFAULT_DESCRIPTION:
        return str(DEFAULT_GROUP_DESCRIPTION)
    return group.description
