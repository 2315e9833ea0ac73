"""Locks held across worker processes (in Redis) on work that must not run twice at once on
one host, such as writing a base image into its pool.

They are leases (compute.leases): renewed while their holder lives, gone within
`LEASE_SECONDS` of its death, so a worker killed mid-upload delays the next build of that
image by seconds, not by the length of an upload.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from compute.leases import Lease

# How long a build waits for a lock another build holds before its task is put back on the
# queue (compute.tasks retries busy work without counting it as a failure).
WAIT_SECONDS = 10


class Busy(Exception):
    """Someone else holds the lock (or the instance) right now; try again shortly."""


@contextmanager
def held(host_id, name: str, *, wait: float = WAIT_SECONDS) -> Iterator[None]:
    """Hold the host's lock called `name`, waiting up to `wait` seconds; Busy when it stays taken."""
    lease = Lease(f"{settings.REDIS_PREFIX}:host-lock:{host_id}:{name}")
    deadline = time.monotonic() + wait
    while not lease.acquire():
        if time.monotonic() >= deadline:
            raise Busy(f"{name} is busy on host {host_id}")
        time.sleep(0.2)
    try:
        yield
    finally:
        lease.release()
