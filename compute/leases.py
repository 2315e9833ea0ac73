"""Leases in Redis that die with their holder: one owner of an instance at a time.

A lease is a Redis key holding its owner's random token, with a short TTL that a background
thread renews while the owner lives. A worker killed by SIGKILL, the OOM killer or a host
reboot stops renewing, so its lease is gone within `LEASE_SECONDS` and another worker may take
over; a worker that merely runs a long step keeps it. Every step checks the lease (the fencing
check) before it touches the host, so a holder that lost its lease stops at the next step.

Instance leases serialize every task on one instance (a delete waits for the build it
supersedes to stop). Host locks (`compute.redis_locks`) use the same mechanism for work that
must not run twice at once on one host.
"""

from __future__ import annotations

import secrets
import threading
from contextlib import suppress

import redis
from django.conf import settings

# Renew this often relative to the TTL: two renewals may be missed before the lease is lost.
RENEW_FRACTION = 3

# Set the value and TTL only if the key still holds our token.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""

_client_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}


def client() -> redis.Redis:
    """One connection pool per Redis URL per process."""
    with _client_lock:
        conn = _clients.get(settings.REDIS_URL)
        if conn is None:
            conn = _clients[settings.REDIS_URL] = redis.Redis.from_url(settings.REDIS_URL)
        return conn


def instance_key(instance_id) -> str:
    return f"{settings.REDIS_PREFIX}:instance-lease:{instance_id}"


def deleting_key(instance_id) -> str:
    return f"{settings.REDIS_PREFIX}:instance-deleting:{instance_id}"


def mark_deleting(instance_id) -> None:
    """Tell a task working on the instance that a delete superseded it, so that it stops at
    its next step instead of finishing work the delete will undo. Only a hint: the delete
    waits for the instance's lease whatever happens to this key."""
    with suppress(redis.RedisError):
        client().set(deleting_key(instance_id), "1", ex=24 * 3600)


class Lease:
    """A renewed lease on one key. Use `acquire()` then `release()`, or `with lease:`."""

    def __init__(self, key: str, *, seconds: float | None = None):
        self.key = key
        self.seconds = seconds or settings.LEASE_SECONDS
        self.token = secrets.token_hex(16)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._lost = threading.Event()

    def acquire(self) -> bool:
        ok = bool(client().set(self.key, self.token, nx=True, px=int(self.seconds * 1000)))
        if ok:
            self._renewer = threading.Thread(target=self._renew_loop, name=f"lease {self.key}", daemon=True)
            self._renewer.start()
        return ok

    def _renew_loop(self) -> None:
        interval = self.seconds / RENEW_FRACTION
        while not self._stop.wait(interval):
            try:
                renewed = client().eval(_RENEW, 1, self.key, self.token, int(self.seconds * 1000))
            except redis.RedisError:
                continue  # Redis away for a moment: the TTL covers two more tries
            if not renewed:
                self._lost.set()
                return

    def held(self, *also: str) -> tuple[bool, list]:
        """The fencing check: whether the key still holds this lease's token, and the values
        of the `also` keys, read in the same round trip."""
        if self._lost.is_set():
            return False, [None] * len(also)
        try:
            values = client().mget([self.key, *also])
        except redis.RedisError:
            return False, [None] * len(also)
        return values[0] == self.token.encode(), values[1:]

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=2)
        with suppress(redis.RedisError):
            client().eval(_RELEASE, 1, self.key, self.token)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def holders(keys: list[str]) -> list[bool]:
    """Whether each key is held by someone, in one round trip."""
    if not keys:
        return []
    return [value is not None for value in client().mget(keys)]
