"""Liveness and readiness: each dependency a named check, 503 when one of them fails."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from portal import tasks as portal_tasks
from tests.hostfaults import hypervisor_unreachable
from tests.processes import free_port, redis_client


@pytest.fixture
def beat_ticked(settings):
    """Beat's last tick, as its task writes it; removed afterwards."""
    portal_tasks.beat_tick()
    yield
    redis_client().delete(portal_tasks.beat_key())


def ready(client: Client | None = None):
    response = (client or Client()).get("/healthz/ready")
    return response.status_code, response.json() if response["Content-Type"] == "application/json" else None


@pytest.mark.django_db
def test_it_is_alive_without_asking_anything(settings):
    # given: nothing it depends on answers
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    # when
    response = Client().get("/healthz/live")
    # then
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert Client().get("/healthz").status_code == 200  # the old check stays


@pytest.mark.django_db
def test_it_is_ready_when_every_check_passes(host, beat_ticked):
    # when
    status, body = ready()
    # then
    assert status == 200, body
    assert body["status"] == "ok"
    assert {"database", "redis", "broker", "beat", f"hypervisor:{host.name}"} <= set(body["checks"])
    assert all(check["ok"] for check in body["checks"].values())
    assert 0 <= body["checks"]["beat"]["age_seconds"] < 60


@pytest.mark.django_db
def test_it_is_not_ready_while_a_hypervisor_is_unreachable(simulated_host, beat_ticked):
    # given: two hosts, one whose libvirt does not answer
    good, bad = simulated_host(), simulated_host()
    with hypervisor_unreachable(bad):
        # when
        status, body = ready()
    # then: 503, and the check that failed says which host
    assert status == 503
    assert body["status"] == "fail"
    assert body["checks"][f"hypervisor:{bad.name}"]["ok"] is False
    assert "error" in body["checks"][f"hypervisor:{bad.name}"]
    assert body["checks"][f"hypervisor:{good.name}"]["ok"] is True
    assert body["checks"]["database"]["ok"] and body["checks"]["redis"]["ok"]


@pytest.mark.django_db
def test_it_is_not_ready_when_redis_is_down(settings, beat_ticked):
    # given: Redis at an address where nothing listens
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.READINESS_TIMEOUT_SECONDS = 1
    # when
    began = time.monotonic()
    status, body = ready()
    # then
    assert status == 503
    assert body["checks"]["redis"]["ok"] is False and "error" in body["checks"]["redis"]
    assert body["checks"]["beat"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
    assert time.monotonic() - began < 10


@pytest.mark.django_db
def test_it_is_not_ready_when_beat_has_stopped(settings, beat_ticked):
    # given: beat's last tick is older than allowed
    settings.BEAT_STALE_SECONDS = 0
    time.sleep(0.01)
    # when
    status, body = ready()
    # then
    assert status == 503
    assert body["checks"]["beat"]["ok"] is False
    assert "ago" in body["checks"]["beat"]["error"]


@pytest.mark.django_db
def test_it_shows_readiness_only_to_the_monitoring_network_and_operators(operator, beat_ticked):
    outside = "203.0.113.9"
    assert Client(REMOTE_ADDR=outside).get("/healthz/ready").status_code == 403
    staff = Client(REMOTE_ADDR=outside)
    staff.force_login(operator)
    assert staff.get("/healthz/ready").status_code == 200
