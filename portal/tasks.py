"""Celery tasks of the web layer: beat's proof of life for the readiness check."""

from __future__ import annotations

import time

import redis
from celery import shared_task
from django.conf import settings


def beat_key() -> str:
    return f"{settings.REDIS_PREFIX}:beat:last-tick"


@shared_task
def beat_tick() -> float:
    """Beat, every BEAT_TICK_SECONDS, on the control queue: the moment beat last queued a task
    that a worker ran. /healthz/ready fails once it is older than BEAT_STALE_SECONDS (beat
    stopped, the broker lost, or no control worker)."""
    now = time.time()
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        client.set(beat_key(), repr(now), ex=max(settings.BEAT_STALE_SECONDS * 10, 3600))
    finally:
        client.close()
    return now
