"""EC2-style ids for our UUIDs, one to one: the prefix and the UUID's 32 hex digits.

AWS's own ids have 17 hex digits after the prefix, but its SDKs and CLI treat ids as opaque
strings, so the whole UUID fits without a table of short ids.
"""

from __future__ import annotations

import re
import uuid

from portal.ec2.errors import Ec2Error

PREFIXES = {"instance": "i", "image": "ami", "key": "key", "reservation": "r"}
ID_RE = re.compile(r"(?P<prefix>[a-z]+)-(?P<hex>[0-9a-f]{32})")


def ec2_id(kind: str, pk) -> str:
    return f"{PREFIXES[kind]}-{uuid.UUID(str(pk)).hex}"


def parse(kind: str, value: str, not_found: str) -> uuid.UUID:
    """The UUID an EC2 id names; a malformed one is EC2's `<…>.Malformed`."""
    match = ID_RE.fullmatch(value)
    if match is None or match["prefix"] != PREFIXES[kind]:
        raise Ec2Error(not_found.replace(".NotFound", ".Malformed"), f"Invalid id: {value[:80]!r}.")
    return uuid.UUID(match["hex"])
