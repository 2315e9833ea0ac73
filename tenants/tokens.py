"""API tokens, `cpt_<prefix>_<secret>`: how they are made, hashed and looked up."""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from datetime import timedelta

from django.db import connection
from django.db.models.expressions import Col

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


def _load(model, values: list):
    """A model object from its columns' values, converted as the ORM converts them (the
    database backend's converters, then the field's own)."""
    attnames, columns = _columns(model)
    converted = []
    for (column, converters), value in zip(columns, values, strict=True):
        for convert in converters:
            value = convert(value, column, connection)
        converted.append(value)
    return model.from_db(connection.alias, attnames, converted)


@functools.cache  # per model: the same on every request (one database, one backend)
def _columns(model) -> tuple[list[str], list[tuple[Col, list]]]:
    fields = model._meta.concrete_fields
    columns = []
    for field in fields:
        column = Col(model._meta.db_table, field)
        columns.append((column, connection.ops.get_db_converters(column) + column.get_db_converters(connection)))
    return [field.attname for field in fields], columns


def _token_query() -> str:
    """One round trip for everything a request needs from its token: the token, its user, its
    tenant, and the holder's role there. Written out because this runs on every API request
    and building it with the ORM cost more (about 1.4 ms) than the rest of a small request."""

    def select(alias: str, model) -> str:
        return ", ".join(f'{alias}."{field.column}"' for field in model._meta.concrete_fields)

    # Made of model metadata only; the prefix is a query parameter.
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
    values, loaded = list(row), []
    for model in (ApiToken, User, Tenant):
        width = len(model._meta.concrete_fields)
        loaded.append(_load(model, values[:width]))
        values = values[width:]
    token, token.user, token.tenant = loaded
    token.member_role = values[0]
    if not hmac.compare_digest(token.secret_hash, hash_secret(parts[2])):
        return None
    return token
