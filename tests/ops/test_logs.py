"""Request ids: from the HTTP request into the task, onto its log lines and its action rows."""

from __future__ import annotations

import io
import json
import logging
import time
import uuid

import pytest
from celery.signals import after_task_publish
from django.test import Client

from compute import operations, services
from compute.models import InstanceAction
from compute.sizing import Size
from portal import logs
from tests.conftest import RUN_PREFIX, actor, token_for
from tests.ops.scrape import families, sample
from tests.processes import redis_client

SETTLE_WITHIN = 60.0


def json_lines(text: str) -> list[dict]:
    """Every line that is a JSON object (a worker also prints its banner as plain text)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_it_writes_one_json_object_a_line_with_the_context():
    # given: the handler LOG_FORMAT=json configures
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.ContextFilter())
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger(f"test.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.propagate = False
    # when
    token = logs.bind(request_id="req-1", tenant_id="t-1", instance_id="i-1")
    try:
        logger.warning("disk %s is %d%% full", "vda", 93)
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("it failed")
    finally:
        logs._context.reset(token)
    logger.info("outside")
    # then
    first, failure, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "disk vda is 93% full" and first["level"] == "WARNING"
    assert (first["request_id"], first["tenant_id"], first["instance_id"]) == ("req-1", "t-1", "i-1")
    assert first["ts"].endswith("+00:00")
    assert "ValueError: boom" in failure["exc_info"]
    assert "request_id" not in outside


@pytest.mark.django_db
def test_it_takes_a_plain_request_id_from_the_caller_and_makes_one_otherwise():
    client = Client()
    assert client.get("/healthz/live", HTTP_X_REQUEST_ID="abc-123")["X-Request-ID"] == "abc-123"
    made = client.get("/healthz/live", HTTP_X_REQUEST_ID="bad id\n{}")["X-Request-ID"]
    assert made != "bad id\n{}" and len(made) == 32
    assert client.get("/healthz/live", HTTP_X_REQUEST_ID="abc\n")["X-Request-ID"] != "abc\n"
    assert len(client.get("/healthz/live", HTTP_X_REQUEST_ID="x" * 65)["X-Request-ID"]) == 32
    assert client.get("/healthz/live")["X-Request-ID"] != made


def test_it_stamps_the_request_id_on_the_action_rows_of_an_eager_create(
    eager, api, alice, tenant_a, host, image, flavor
):
    # given
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    # when
    response = api(alice).post(
        "/api/v1/instances",
        {"name": f"m-{uuid.uuid4().hex[:6]}", "image": str(image.pk), "flavor": str(flavor.pk)},
        format="json",
        HTTP_X_REQUEST_ID=request_id,
    )
    # then: the request row and every step row carry it
    assert response.status_code == 202, response.json()
    assert response["X-Request-ID"] == request_id
    rows = InstanceAction.objects.filter(instance_id=response.json()["id"])
    assert rows.count() > 5
    assert set(rows.values_list("request_id", flat=True)) == {request_id}


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_it_follows_a_create_from_the_request_to_the_workers_lines(
    start_worker, api, alice, tenant_a, host, image, flavor, tmp_path, monkeypatch
):
    # given: a real worker writing JSON lines and its metrics to the directory this process reads
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    worker = start_worker(host.queue, {"LOG_FORMAT": "json", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    # when: a create through the API, with the caller's request id
    client = api(alice)
    response = client.post(
        "/api/v1/instances",
        {"name": f"m-{uuid.uuid4().hex[:6]}", "image": str(image.pk), "flavor": str(flavor.pk)},
        format="json",
        HTTP_X_REQUEST_ID=request_id,
    )
    assert response.status_code == 202, response.json()
    instance_id = response.json()["id"]
    began = time.monotonic()
    while client.get(f"/api/v1/instances/{instance_id}").json()["state"] != "running":
        assert time.monotonic() - began < SETTLE_WITHIN, worker.output()
        time.sleep(0.1)
    # then: the worker's lines for that task carry the request id and the instance
    ours = [line for line in json_lines(worker.output()) if line.get("request_id") == request_id]
    assert ours, worker.output()
    assert {line.get("instance_id") for line in ours} == {instance_id}
    assert {line.get("tenant_id") for line in ours} == {str(tenant_a.pk)}
    assert {line.get("task_name") for line in ours} == {"compute.tasks.provision"}
    assert any(line["message"].startswith("started compute.tasks.provision, task id ") for line in ours)
    # the steps the worker recorded carry it too
    steps = InstanceAction.objects.filter(instance_id=instance_id).exclude(step="")
    assert steps.count() >= 6 and set(steps.values_list("request_id", flat=True)) == {request_id}
    # and the worker's own figures reach /metrics through the shared directory
    scraped = families(Client())
    ran = sample(scraped, "portal_celery_tasks", "portal_celery_tasks_total", task="compute.tasks.provision")
    assert ran == 1
    image_steps = ("portal_build_step_duration_seconds", "portal_build_step_duration_seconds_count")
    assert sample(scraped, *image_steps, step="image") == 1


@pytest.mark.django_db(transaction=True)
def test_it_sends_the_request_id_and_the_tokens_tenant_with_the_task(api, alice, tenant_a, host, image, flavor):
    # given: what each published task's headers hold
    sent: list[dict] = []

    def record(sender=None, headers=None, **_kwargs):
        sent.append({"task": sender, **{field: headers.get(field) for field in logs.FIELDS}})

    after_task_publish.connect(record, weak=False)
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    try:
        # when: a create with an API token of tenant A (no worker: the task stays queued)
        response = api(token=token_for(alice, tenant_a)).post(
            "/api/v1/instances",
            {"name": f"m-{uuid.uuid4().hex[:6]}", "image": str(image.pk), "flavor": str(flavor.pk)},
            format="json",
            HTTP_X_REQUEST_ID=request_id,
        )
    finally:
        after_task_publish.disconnect(record)
        redis_client().delete(f"{RUN_PREFIX}:{host.queue}")
    # then: the build's message carries the request and the token's tenant
    assert response.status_code == 202, response.json()
    assert [m for m in sent if m["task"] == "compute.tasks.provision"] == [
        {
            "task": "compute.tasks.provision",
            "request_id": request_id,
            "tenant_id": str(tenant_a.pk),
            "instance_id": None,
        }
    ]


@pytest.mark.django_db(transaction=True)
def test_it_sends_the_instance_a_route_names_with_its_task(api, alice, tenant_a, host, image, flavor):
    # given: a running instance, and what each published task's headers hold
    request = services.CreateRequest(name="vm", image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=None)
    instance = services.instance_create(actor=actor(alice, tenant_a), request=request)
    redis_client().delete(f"{RUN_PREFIX}:{host.queue}")  # the build's message: run here instead
    operations.provision(instance.pk)
    sent: list[dict] = []

    def record(sender=None, headers=None, **_kwargs):
        sent.append({"task": sender, **{field: headers.get(field) for field in logs.FIELDS}})

    after_task_publish.connect(record, weak=False)
    try:
        # when: a stop through the instance's route
        response = api(alice).post(f"/api/v1/instances/{instance.pk}/stop", HTTP_X_REQUEST_ID="req-stop-1")
    finally:
        after_task_publish.disconnect(record)
        redis_client().delete(f"{RUN_PREFIX}:{host.queue}")
    # then
    assert response.status_code == 202, response.json()
    assert [m for m in sent if m["task"] == "compute.tasks.stop"] == [
        {"task": "compute.tasks.stop", "request_id": "req-stop-1", "tenant_id": None, "instance_id": str(instance.pk)}
    ]
