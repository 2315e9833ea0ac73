"""Reading a NoCloud seed back, to check what a guest will see."""

from __future__ import annotations

import io

import pycdlib

from compute.cloudinit import SEED_FILES


def read_seed(iso: bytes) -> dict[str, bytes]:
    """The files of a seed ISO by their Joliet names (used to check what a guest will see)."""
    reader = pycdlib.PyCdlib()
    reader.open_fp(io.BytesIO(iso))
    files = {}
    try:
        for name in SEED_FILES:
            out = io.BytesIO()
            reader.get_file_from_iso_fp(out, joliet_path=f"/{name}")
            files[name] = out.getvalue()
    finally:
        reader.close()
    return files
