"""The cloud-init NoCloud seed: an ISO 9660 volume labelled `cidata`, built in Python.

What cloud-init (22 and later) reads from it:
- meta-data: the instance id, the hostname and the tenant's SSH public keys, which cloud-init
  gives to the image's default user (`debian` on Debian). Written as JSON (which YAML reads as
  is), so a name or key comment can never change its structure.
- vendor-data: the provider's defaults, as cloud-config that the tenant's user-data overrides
  key by key: the hostname resolves in /etc/hosts (else sudo waits on DNS, then warns); and,
  when the customer chose a password, its SHA-512 crypt hash for the image's default user
  (`password`, which cloud-init hands to `chpasswd -e`), not expired, with SSH password login
  on (`ssh_pwauth`). It is there rather than in user-data so that it applies whatever the
  tenant's user-data is (a script, a cloud-config of its own); a cloud-config of the tenant's
  that sets these keys wins. The password itself is never written anywhere.
- user-data: the tenant's own text for its own guest, passed through byte for byte.
There is no network-config on purpose: without one, cloud-init brings up the first NIC by
DHCP whatever the image names it (ens3, enp1s0, eth0), while a config matching names (such as
`match: {name: "e*"}`) left the NIC down under ifupdown on Debian 12. The host's DHCP server
hands out the address the portal chose for the instance.
"""

from __future__ import annotations

import io
import json
import re
import secrets

import pycdlib
from passlib.hash import sha512_crypt

DEFAULT_USER_DATA = "#cloud-config\n{}\n"
VENDOR_DATA = {"manage_etc_hosts": "localhost"}
SEED_FILES = ("meta-data", "vendor-data", "user-data")
# glibc's default is 5000; more makes a stolen seed costlier to guess, and 0.1 s per create.
PASSWORD_ROUNDS = 50_000


def hash_password(password: str) -> str:
    """The password as a SHA-512 crypt(3) hash ($6$...), as chpasswd -e and the guest agent take it."""
    return sha512_crypt.using(rounds=PASSWORD_ROUNDS).hash(password)


def generate_password() -> str:
    """A password for the customer, shown once: 96 random bits in 16 URL-safe characters."""
    return secrets.token_urlsafe(12)


def hostname_for(name: str, uuid: str) -> str:
    """An RFC 1123 label from the instance name, or vm-<uuid prefix> when nothing is left."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label or f"vm-{uuid[:8]}"


def meta_data(*, uuid: str, hostname: str, ssh_keys: list[str]) -> bytes:
    data = {"instance-id": uuid, "local-hostname": hostname, "public-keys": list(ssh_keys)}
    return json.dumps(data, indent=1).encode()


def vendor_data(password_hash: str = "") -> bytes:
    data = dict(VENDOR_DATA)
    if password_hash:
        data.update(password=password_hash, chpasswd={"expire": False}, ssh_pwauth=True)
    return b"#cloud-config\n" + json.dumps(data, indent=1).encode() + b"\n"


def build_seed(*, uuid: str, hostname: str, ssh_keys: list[str], user_data: str, password_hash: str = "") -> bytes:
    files = {
        "meta-data": meta_data(uuid=uuid, hostname=hostname, ssh_keys=ssh_keys),
        "vendor-data": vendor_data(password_hash),
        "user-data": (user_data or DEFAULT_USER_DATA).encode(),
    }
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for name, content in files.items():
        iso_name = "/" + name.replace("-", "").upper()[:8] + ".;1"
        iso.add_fp(io.BytesIO(content), len(content), iso_name, rr_name=name, joliet_path=f"/{name}")
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()
