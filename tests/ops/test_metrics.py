"""/metrics: who may read it, and that it exposes each family of issue 17 with real figures."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from billing import tasks as billing_tasks
from billing.models import MeterSample
from compute import services
from compute.models import Host
from compute.sizing import Size
from portal import tasks as portal_tasks
from portal.celery import app as celery_app
from tests.conftest import RUN_PREFIX, actor
from tests.ops.scrape import FAMILIES, families, sample
from tests.processes import redis_client

OUTSIDE = "203.0.113.9"  # TEST-NET-3: never an allowed network


def client_from(address: str, user=None, **headers) -> Client:
    client = Client(REMOTE_ADDR=address, **headers)
    if user is not None:
        client.force_login(user)
    return client


@pytest.mark.django_db
def test_it_serves_metrics_to_loopback_and_operators_only(alice, operator):
    # given / when / then: an anonymous scraper on loopback (Prometheus beside the portal)
    assert client_from("127.0.0.1").get("/metrics").status_code == 200
    # anyone else: only staff
    assert client_from(OUTSIDE).get("/metrics").status_code == 403
    assert client_from(OUTSIDE, alice).get("/metrics").status_code == 403
    assert client_from(OUTSIDE, operator).get("/metrics").status_code == 200
    # loopback through the proxy says nothing of the client
    assert client_from("127.0.0.1", HTTP_X_FORWARDED_FOR=OUTSIDE).get("/metrics").status_code == 403


@pytest.mark.django_db
def test_it_lets_a_configured_network_scrape(settings):
    # given: the monitoring network, and loopback no longer listed
    settings.METRICS_ALLOWED_NETWORKS = ["10.20.0.0/16"]
    # when / then
    assert client_from("10.20.3.4").get("/metrics").status_code == 200
    assert client_from("10.21.3.4").get("/metrics").status_code == 403
    assert client_from("127.0.0.1").get("/metrics").status_code == 403


@pytest.mark.django_db
def test_it_exposes_every_family_in_the_text_format():
    # when
    scraped = families(Client())
    # then
    assert {name: scraped[name].type for name in FAMILIES if name in scraped} == FAMILIES


@pytest.mark.django_db
def test_it_counts_requests_by_route_pattern_not_path(alice, tenant_a):
    # given: two different instances' paths, one route
    client = Client()
    client.force_login(alice)
    route = None
    for _ in range(2):
        response = client.get(f"/api/v1/instances/{uuid.uuid4()}")
        assert response.status_code == 404
        route = response.wsgi_request.resolver_match.route
    counted = families(Client())
    series = {"route": route, "method": "GET", "status": "404"}
    before = sample(counted, "portal_http_requests", "portal_http_requests_total", **series) or 0
    client.get(f"/api/v1/instances/{uuid.uuid4()}")
    # when
    scraped = families(Client())
    # then: one series for the route, counted once more, no uuid in any label
    assert "<pk>" in route or "(?P<pk>" in route
    assert sample(scraped, "portal_http_requests", "portal_http_requests_total", **series) == before + 1
    assert sample(
        scraped, "portal_http_request_duration_seconds", "portal_http_request_duration_seconds_count", route=route
    )
    labels = [s.labels.get("route", "") for s in scraped["portal_http_requests"].samples]
    assert not any(len(part) == 36 and part.count("-") == 4 for label in labels for part in label.split("/"))


@pytest.mark.django_db
def test_it_reads_hosts_instances_and_queues_at_scrape_time(host, alice, tenant_a, image, flavor):
    # given: a host that answered 42 s ago, with 2 vCPUs claimed, and two tasks in its queue
    Host.objects.filter(pk=host.pk).update(last_heartbeat=timezone.now() - timedelta(seconds=42))
    for _ in range(2):
        portal_tasks.beat_tick.apply_async(queue=host.queue)
    request = services.CreateRequest(
        name=f"m-{uuid.uuid4().hex[:6]}", image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=str(flavor.pk)
    )
    services.instance_create(actor=actor(alice, tenant_a), request=request)  # building; its task never sent
    try:
        # when
        scraped = families(Client())
    finally:
        redis_client().delete(f"{RUN_PREFIX}:{host.queue}")
    # then
    host.refresh_from_db()
    capacity = host.capacity()
    age = sample(scraped, "portal_host_heartbeat_age_seconds", "portal_host_heartbeat_age_seconds", host=host.name)
    assert 42 <= age < 60
    used = sample(scraped, "portal_host_capacity_used", "portal_host_capacity_used", host=host.name, resource="vcpus")
    free = sample(scraped, "portal_host_capacity_free", "portal_host_capacity_free", host=host.name, resource="vcpus")
    assert (used, free) == (host.vcpus_used, capacity["vcpus"] - host.vcpus_used)
    assert used == flavor.vcpus
    assert sample(scraped, "portal_queue_depth", "portal_queue_depth", queue=host.queue, host=host.name) == 2
    assert sample(scraped, "portal_instances", "portal_instances", state="building") == 1
    assert sample(scraped, "portal_instances", "portal_instances", state="running") == 0
    assert not scraped["portal_metering_lag_seconds"].samples  # no sample taken yet


def test_it_counts_tasks_build_steps_and_failures(eager, api, alice, tenant_a, host, image, flavor):
    # given
    def value(scraped, family, name, **labels):
        return sample(scraped, family, name, **labels) or 0

    before = families(Client())
    # when: a create runs its steps in this process, and a task fails
    response = api(alice).post(
        "/api/v1/instances", {"name": f"m-{uuid.uuid4().hex[:6]}", "image": str(image.pk), "flavor": str(flavor.pk)},
        format="json",
    )  # fmt: skip
    assert response.status_code == 202, response.json()
    celery_app.conf.task_eager_propagates = False
    portal_tasks.beat_tick.apply(kwargs={"unexpected": 1})
    after = families(Client())
    # then
    step = ("portal_build_step_duration_seconds", "portal_build_step_duration_seconds_count")
    assert value(after, *step, step="image") == value(before, *step, step="image") + 1
    assert value(after, *step, step="start") == value(before, *step, step="start") + 1
    provision = {"task": "compute.tasks.provision", "outcome": "success"}
    tasks = ("portal_celery_tasks", "portal_celery_tasks_total")
    assert value(after, *tasks, **provision) == value(before, *tasks, **provision) + 1
    failed = {"task": "portal.tasks.beat_tick", "outcome": "failure"}
    assert value(after, *tasks, **failed) == value(before, *tasks, **failed) + 1
    duration = ("portal_celery_task_duration_seconds", "portal_celery_task_duration_seconds_count")
    assert value(after, *duration, task="compute.tasks.provision") > value(
        before, *duration, task="compute.tasks.provision"
    )


@pytest.mark.django_db
def test_it_reports_the_metering_lag_from_the_newest_sample(alice, tenant_a, host, image, flavor):
    # given: the newest traffic sample was taken 90 s ago
    request = services.CreateRequest(
        name=f"m-{uuid.uuid4().hex[:6]}", image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=str(flavor.pk)
    )
    instance = services.instance_create(actor=actor(alice, tenant_a), request=request)
    for age in (300, 90):
        MeterSample.objects.create(
            instance=instance, taken_at=timezone.now() - timedelta(seconds=age), cpu_time_ns=0, rx_bytes=0,
            tx_bytes=0, disk_bytes=0, cpu_ns_delta=0, rx_delta=0, tx_delta=0,
        )  # fmt: skip
    # when
    lag = sample(families(Client()), "portal_metering_lag_seconds", "portal_metering_lag_seconds")
    # then
    assert 90 <= lag < 120


def test_it_times_the_invoice_run_and_counts_its_outcome(eager, settings):
    # given
    runs = ("portal_invoice_runs", "portal_invoice_runs_total")
    before = sample(families(Client()), *runs, outcome="success") or 0
    # when: the monthly run, as beat queues it (nothing to bill here)
    billing_tasks.invoice_last_month.delay()
    # then
    scraped = families(Client())
    assert sample(scraped, *runs, outcome="success") == before + 1
    duration = sample(scraped, "portal_invoice_run_duration_seconds", "portal_invoice_run_duration_seconds")
    assert 0 < duration < 60
