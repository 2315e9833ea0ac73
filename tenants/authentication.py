"""`Authorization: Bearer cpt_<prefix>_<secret>` API tokens."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import timedelta

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from tenants.models import ApiToken

TOKEN_PREFIX = "cpt"  # noqa: S105 - a public marker, not a secret
# Writing last_used_at on every request would turn each API read into a write.
LAST_USED_GRANULARITY = timedelta(seconds=60)
# What new_token_material() makes; anything else (a NUL byte, say) must not reach the database.
PREFIX_RE = re.compile(r"[0-9a-f]{12}")


def hash_secret(secret: str) -> str:
    # The secret is 256 random bits, so a plain SHA-256 cannot be brute-forced; a slow hash
    # would only add latency to every API call.
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token_material() -> tuple[str, str, str]:
    """(prefix, secret, the full token string shown once to the user)."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return prefix, secret, f"{TOKEN_PREFIX}_{prefix}_{secret}"


def token_from_string(raw: str) -> ApiToken | None:
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or len(raw) > 200 or not PREFIX_RE.fullmatch(parts[1]):
        return None
    token = ApiToken.objects.select_related("user", "tenant").filter(prefix=parts[1]).first()
    if token is None or not hmac.compare_digest(token.secret_hash, hash_secret(parts[2])):
        return None
    return token


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
