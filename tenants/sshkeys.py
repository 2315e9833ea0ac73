"""OpenSSH public key parsing: type check, structure check and SHA256 fingerprint."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from django.utils.translation import gettext as _

from base.errors import Invalid

KEY_TYPES = {
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
}
MIN_RSA_BITS = 2048


class InvalidKey(Invalid):
    """Text that is not an acceptable OpenSSH public key; says what is wrong with it."""

    def __init__(self, message: str):
        super().__init__("public_key", message)


@dataclass(frozen=True)
class ParsedKey:
    key_type: str
    blob: bytes
    comment: str

    @property
    def fingerprint(self) -> str:
        digest = base64.b64encode(hashlib.sha256(self.blob).digest()).decode().rstrip("=")
        return f"SHA256:{digest}"

    @property
    def canonical(self) -> str:
        # Only type and key material are kept; the comment is user text and must not travel
        # into cloud-init as anything but a comment.
        return f"{self.key_type} {base64.b64encode(self.blob).decode()}"


def _read_string(blob: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(blob):
        raise InvalidKey(_("The key data is truncated."))
    (length,) = struct.unpack(">I", blob[offset : offset + 4])
    end = offset + 4 + length
    if end > len(blob):
        raise InvalidKey(_("The key data is truncated."))
    return blob[offset + 4 : end], end


def parse_public_key(text: str) -> ParsedKey:
    parts = text.strip().split(None, 2)
    if len(parts) < 2 or "\n" in text.strip():
        raise InvalidKey(_("Expected one line: '<type> <base64 key> [comment]'."))
    key_type, data = parts[0], parts[1]
    if key_type not in KEY_TYPES:
        raise InvalidKey(_("Unsupported key type; use one of %(types)s.") % {"types": ", ".join(sorted(KEY_TYPES))})
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKey(_("The key is not valid base64.")) from None
    inner_type, offset = _read_string(blob, 0)
    if inner_type.decode(errors="replace") != key_type:
        raise InvalidKey(_("The key data does not match its type."))
    if key_type == "ssh-rsa":
        _exponent, offset = _read_string(blob, offset)
        modulus, offset = _read_string(blob, offset)
        bits = (len(modulus.lstrip(b"\x00")) * 8) if modulus else 0
        if bits < MIN_RSA_BITS:
            raise InvalidKey(_("RSA keys must have at least %(bits)s bits.") % {"bits": MIN_RSA_BITS})
    elif key_type == "ssh-ed25519":
        point, offset = _read_string(blob, offset)
        if len(point) != 32:
            raise InvalidKey(_("An ed25519 key must be 32 bytes."))
    comment = parts[2].strip() if len(parts) > 2 else ""
    return ParsedKey(key_type, blob, comment[:100])
