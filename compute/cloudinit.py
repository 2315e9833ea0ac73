"""The cloud-init NoCloud seed: an ISO 9660 volume labelled `cidata`, built in Python.

meta-data is written as JSON (which YAML reads as is), so a name or key comment can never
change its structure; user-data is the tenant's own text for its own guest and is passed
through byte for byte.
"""

from __future__ import annotations

import io
import json
import re

import pycdlib

DEFAULT_USER_DATA = "#cloud-config\n{}\n"


def hostname_for(name: str, uuid: str) -> str:
    """An RFC 1123 label from the instance name, or vm-<uuid prefix> when nothing is left."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label or f"vm-{uuid[:8]}"


def meta_data(*, uuid: str, hostname: str, ssh_keys: list[str]) -> bytes:
    data = {"instance-id": uuid, "local-hostname": hostname, "public-keys": list(ssh_keys)}
    return json.dumps(data, indent=1).encode()


def build_seed(*, uuid: str, hostname: str, ssh_keys: list[str], user_data: str) -> bytes:
    files = {
        "meta-data": meta_data(uuid=uuid, hostname=hostname, ssh_keys=ssh_keys),
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


def read_seed(iso: bytes) -> dict[str, bytes]:
    """The files of a seed ISO by their Joliet names (used to check what a guest will see)."""
    reader = pycdlib.PyCdlib()
    reader.open_fp(io.BytesIO(iso))
    files = {}
    try:
        for name in ("meta-data", "user-data"):
            out = io.BytesIO()
            reader.get_file_from_iso_fp(out, joliet_path=f"/{name}")
            files[name] = out.getvalue()
    finally:
        reader.close()
    return files
