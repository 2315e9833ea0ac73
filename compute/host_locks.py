"""Locks held across worker processes (in Redis) on work that must not run twice at once on
one host, such as writing a base image into its pool."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

import redis
from django.conf import settings
from redis.exceptions import LockError

from compute.drivers.base import TransientHostError

# Long enough for a large image to upload; a worker killed while holding the lock delays the
# next build of that image on that host by at most this long.
LOCK_SECONDS = 30 * 60


@contextmanager
def held(host_id, name: str, *, seconds: float = LOCK_SECONDS) -> Iterator[None]:
    """Hold the host's lock called `name`, waiting up to `seconds` for it; a TransientHostError
    (so the task is retried later) when it stays taken."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    key = f"{settings.REDIS_PREFIX}:host-lock:{host_id}:{name}"
    lock = client.lock(key, timeout=LOCK_SECONDS, blocking_timeout=seconds)
    if not lock.acquire():
        raise TransientHostError(f"{name} is busy on host {host_id}")
    try:
        yield
    finally:
        with suppress(LockError):  # it expired: the work outlived LOCK_SECONDS
            lock.release()
        client.close()
