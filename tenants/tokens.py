"""API tokens, `cpt_<prefix>_<secret>`: how they are made, hashed and looked up."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import timedelta

from django.db import connection

from base import rows
from tenants.models import ApiToken, Membership, Tenant, User

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


def _token_query() -> str:
    """One round trip for everything a request needs from its token: the token, its user, its
    tenant, and the holder's role there. Written out because this runs on every API request
    and building it with the ORM cost more (about 1.4 ms) than the rest of a small request."""

    # Made of model metadata only; the prefix is a query parameter.
    select = rows.columns
    return (
        f'SELECT {select("t", ApiToken)}, {select("u", User)}, {select("n", Tenant)}, m."role" '  # noqa: S608
        f'FROM "{ApiToken._meta.db_table}" t '
        f'JOIN "{User._meta.db_table}" u ON u."id" = t."user_id" '
        f'JOIN "{Tenant._meta.db_table}" n ON n."id" = t."tenant_id" '
        f'LEFT JOIN "{Membership._meta.db_table}" m ON m."user_id" = t."user_id" AND m."tenant_id" = t."tenant_id" '
        'WHERE t."prefix" = %s'
    )


TOKEN_SQL = _token_query()


def token_from_string(raw: str) -> ApiToken | None:
    """The usable-or-not token the string names, with `user`, `tenant` and `member_role` (the
    holder's role in the tenant, None when no longer a member) loaded; None if none matches."""
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or len(raw) > 200 or not PREFIX_RE.fullmatch(parts[1]):
        return None
    with connection.cursor() as cursor:
        cursor.execute(TOKEN_SQL, [parts[1]])
        row = cursor.fetchone()
    if row is None:
        return None
    (token, token.user, token.tenant), (token.member_role,) = rows.load(row, (ApiToken, User, Tenant))
    if not hmac.compare_digest(token.secret_hash, hash_secret(parts[2])):
        return None
    return token
