"""EC2 access keys: the key id and secret, the secret sealed at rest, and the lookup.

A Signature Version 4 signature is an HMAC keyed with (a key derived from) the secret, so the
server must hold the secret itself: a hash, as API tokens keep, could not check one. The secret
is sealed with Fernet (AES-128-CBC and HMAC-SHA256) under a key derived from SECRET_KEY with
HKDF, so a copy of the database alone does not give the secrets away. Changing SECRET_KEY makes
every access key unusable (they must be made again).
"""

from __future__ import annotations

import base64
import re
import secrets

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from tenants.models import AccessKey, Membership

KEY_ID_PREFIX = "AKIA"
# The alphabet of AWS's own key ids: upper case letters and the digits 2-7 (RFC 4648 base32).
KEY_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
KEY_ID_RE = re.compile(r"AKIA[A-Z2-7]{16}")


def new_key_material() -> tuple[str, str]:
    """(access key id, secret access key): 80 random bits of id, 240 of secret (40 characters,
    the length of AWS's secrets)."""
    key_id = KEY_ID_PREFIX + "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(16))
    return key_id, secrets.token_urlsafe(30)


def _fernet() -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"portal access key secrets").derive(
        settings.SECRET_KEY.encode()
    )
    return Fernet(base64.urlsafe_b64encode(derived))


def seal(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def unseal(sealed: str) -> str | None:
    """The secret, or None when it was sealed under another SECRET_KEY."""
    try:
        return _fernet().decrypt(sealed.encode()).decode()
    except InvalidToken:
        return None


def key_from_id(key_id: str) -> AccessKey | None:
    """The key the id names, usable or not, with `user`, `tenant` and `member_role` (the holder's
    role in the tenant, None once they left it) loaded; None if none matches."""
    if not KEY_ID_RE.fullmatch(key_id):
        return None
    key = AccessKey.objects.select_related("user", "tenant").filter(access_key_id=key_id).first()
    if key is not None:
        membership = Membership.objects.filter(user_id=key.user_id, tenant_id=key.tenant_id)
        key.member_role = membership.values_list("role", flat=True).first()
    return key
