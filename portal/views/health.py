"""Health for load balancers and service managers: liveness (this process answers) and
readiness (everything a request may need answers, each check named, 503 when one fails)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpResponseForbidden, JsonResponse
from django.views.decorators.cache import never_cache

from compute.models import Host
from compute.upkeep import probe_hypervisor
from portal.metrics import operator_or_allowed_network
from portal.tasks import beat_key

# Hypervisors asked at once; each probe is bounded by READINESS_TIMEOUT_SECONDS.
PROBE_THREADS = 16


@never_cache
def live(request):
    """No dependency at all: only that this process serves requests."""
    return JsonResponse({"status": "ok"})


@never_cache
def ready(request):
    """{"status": "ok"|"fail", "checks": {name: {"ok": bool, "ms": float, ...}}}; 503 on any
    failure. Names: database, redis, broker, beat, and hypervisor:<host> for every host not
    marked down (a down host is already known and takes no work)."""
    if not operator_or_allowed_network(request):
        return HttpResponseForbidden("Readiness is for operators and the monitoring network.\n")
    checks = {name: _timed(check) for name, check in (("database", _database), ("redis", _redis), ("broker", _broker))}
    checks["beat"] = _timed(_beat) if checks["redis"]["ok"] else {"ok": False, "error": "redis does not answer"}
    hosts = list(Host.objects.exclude(status=Host.Status.DOWN).order_by("name"))
    if hosts:
        with ThreadPoolExecutor(max_workers=min(PROBE_THREADS, len(hosts))) as pool:
            for host, result in zip(hosts, pool.map(_hypervisor, hosts), strict=True):
                checks[f"hypervisor:{host.name}"] = result
    ok = all(check["ok"] for check in checks.values())
    return JsonResponse({"status": "ok" if ok else "fail", "checks": checks}, status=200 if ok else 503)


def _timed(check) -> dict:
    started = time.perf_counter()
    try:
        result = {"ok": True, **(check() or {})}
    except Exception as exc:  # each check's failure is its answer, never the page's
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _client(url: str) -> redis.Redis:
    timeout = settings.READINESS_TIMEOUT_SECONDS
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def _redis() -> None:
    with _client(settings.REDIS_URL) as client:
        client.ping()


def _broker() -> None:
    from portal.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=settings.READINESS_TIMEOUT_SECONDS)


def _beat() -> dict:
    with _client(settings.REDIS_URL) as client:
        raw = client.get(beat_key())
    if raw is None:
        raise RuntimeError("beat has not ticked (is beat running, and a worker on the control queue?)")
    age = time.time() - float(raw)
    if age > settings.BEAT_STALE_SECONDS:
        raise RuntimeError(f"beat last ticked {age:.0f} s ago (limit {settings.BEAT_STALE_SECONDS} s)")
    return {"age_seconds": round(age, 1)}


def _hypervisor(host: Host) -> dict:
    def probe() -> None:
        if not probe_hypervisor(host, timeout=settings.READINESS_TIMEOUT_SECONDS):
            raise RuntimeError(
                f"libvirt at the host's URI did not answer within {settings.READINESS_TIMEOUT_SECONDS} s"
            )

    return _timed(probe)
