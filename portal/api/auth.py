"""`Authorization: Bearer cpt_<prefix>_<secret>`: the API's token authentication."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from portal import logs
from tenants.models import ApiToken
from tenants.tokens import LAST_USED_GRANULARITY, token_from_string


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = token_from_string(raw.strip())
        now = timezone.now()
        if token is None or not token.is_usable(now) or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked API token.")
        if token.last_used_at is None or token.last_used_at < now - LAST_USED_GRANULARITY:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        logs.bind(tenant_id=token.tenant_id)  # this request's log lines (and its tasks') name it
        return token.user, token

    def authenticate_header(self, request) -> str:
        return self.keyword


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """Describes BearerTokenAuthentication in the OpenAPI schema (registered by being defined)."""

    target_class = BearerTokenAuthentication
    name = "bearerToken"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token, `cpt_<prefix>_<secret>`, made with POST /api/v1/tokens.",
        }
