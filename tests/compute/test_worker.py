"""Real Celery worker processes doing the hosts' work, driven through the HTTP API.

Each worker is `celery -A portal worker` in its own process, on this run's test database and
Redis namespace (REDIS_PREFIX is what settings derive the broker's key prefix from), serving
one host's queue. A worker opens its own test:///path.xml connection, so the host it builds on
is its own fresh one; the tests see its work through the database and the API.
"""

from __future__ import annotations

import time

import pytest
from celery.signals import after_task_publish
from django.db import connection

from compute.models import Host, Instance, IpAllocation

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SETTLE_WITHIN = 30.0


@pytest.fixture
def published():
    """Every task this process sends: name, id, arguments and queue."""
    sent: list[dict] = []

    def record(sender=None, headers=None, body=None, routing_key=None, **_kwargs):
        sent.append({"task": sender, "id": headers["id"], "args": list(body[0]), "queue": routing_key})

    after_task_publish.connect(record, weak=False)
    yield sent
    after_task_publish.disconnect(record)


def wait_for(client, instance_id: str, state: str) -> None:
    """Poll the API until the instance is in `state`; fails on ERROR or after SETTLE_WITHIN."""
    began = time.monotonic()
    while True:
        body = client.get(f"/api/v1/instances/{instance_id}").json()
        if body["state"] == state:
            return
        assert body["state"] != "error", body
        assert time.monotonic() - began < SETTLE_WITHIN, f"still {body['state']}, wanted {state}: {body}"
        time.sleep(0.05)


def test_it_runs_the_life_cycle_on_a_real_worker(
    start_worker, published, queued, api, alice, tenant_a, host, image, flavor, record_property
):
    worker = start_worker(host.queue)
    client = api(alice)
    timings = {"worker_ready": worker.ready_after}
    # when: create
    began = time.monotonic()
    response = client.post(
        "/api/v1/instances", {"name": "web-1", "image": str(image.pk), "flavor": str(flavor.pk)}, format="json"
    )
    assert response.status_code == 202, response.json()
    instance_id = response.json()["id"]
    wait_for(client, instance_id, "running")
    timings["create_to_running"] = time.monotonic() - began
    body = client.get(f"/api/v1/instances/{instance_id}").json()
    assert body["power_state"] == "running" and body["progress"] == 100
    steps = [a["step"] for a in body["actions"] if a["step"]]
    assert steps == ["image", "disk", "seed", "dhcp", "firewall", "define", "start"]
    # stop, start, delete
    for action, settled in [("stop", "stopped"), ("start", "running"), ("delete", "deleted")]:
        began = time.monotonic()
        if action == "delete":
            response = client.delete(f"/api/v1/instances/{instance_id}")
        else:
            response = client.post(f"/api/v1/instances/{instance_id}/{action}")
        assert response.status_code == 202, response.json()
        wait_for(client, instance_id, settled)
        timings[f"{action}_to_{settled}"] = time.monotonic() - began
    # then: everything given back, every task run by this worker, nothing left queued
    host = Host.objects.get(pk=host.pk)
    assert (host.vcpus_used, host.memory_mb_used, host.disk_gb_used) == (0, 0, 0)
    assert not IpAllocation.objects.filter(instance__isnull=False).exists()
    assert Instance.objects.get(pk=instance_id).deleted_at is not None
    assert [(p["task"], p["queue"]) for p in published] == [
        (f"compute.tasks.{name}", host.queue) for name in ("provision", "stop", "start", "delete")
    ]
    for message in published:
        assert message["args"] == [instance_id]
        assert worker.ran(message["task"], message["id"]), worker.output()
    assert queued(host.queue) == 0
    for name, seconds in timings.items():
        record_property(name, round(seconds, 3))
    print("worker timings (s):", {k: round(v, 3) for k, v in timings.items()})


def test_it_gives_each_worker_only_its_own_hosts_work(
    start_worker, published, queued, api, alice, tenant_a, simulated_host, image, flavor
):
    # given: two hosts, each served by its own worker on its own queue
    hosts = [simulated_host(), simulated_host()]
    workers = {host.pk: start_worker(host.queue) for host in hosts}
    client = api(alice)
    # when: four instances, which the spreading scheduler puts two on each host
    ids = []
    for n in range(4):
        response = client.post(
            "/api/v1/instances", {"name": f"vm-{n}", "image": str(image.pk), "flavor": str(flavor.pk)}, format="json"
        )
        assert response.status_code == 202, response.json()
        ids.append(response.json()["id"])
    for instance_id in ids:
        wait_for(client, instance_id, "running")
    # then: each build was sent to its host's queue and run by that host's worker alone
    instances = {str(i.pk): i for i in Instance.objects.filter(pk__in=ids)}
    assert sorted(sum(1 for i in instances.values() if i.host_id == h.pk) for h in hosts) == [2, 2]
    builds = [p for p in published if p["task"] == "compute.tasks.provision"]
    assert sorted(p["args"][0] for p in builds) == sorted(ids)
    for message in builds:
        instance = instances[message["args"][0]]
        own = workers[instance.host_id]
        other = next(w for host_id, w in workers.items() if host_id != instance.host_id)
        assert message["queue"] == instance.host.queue == own.queue
        assert own.ran(message["task"], message["id"]), own.output()
        assert message["id"] not in other.output()
    for worker in workers.values():
        assert worker.output().count("compute.tasks.provision[") == 4  # two received, two succeeded
        assert queued(worker.queue) == 0


def test_it_keeps_its_database_connection_between_tasks_and_replaces_a_broken_one(
    start_worker, api, alice, tenant_a, host, image, flavor
):
    # given: a worker with one thread, which has built an instance
    start_worker(host.queue, threads=1)
    client = api(alice)

    def build(name: str) -> str:
        response = client.post(
            "/api/v1/instances", {"name": name, "image": str(image.pk), "flavor": str(flavor.pk)}, format="json"
        )
        assert response.status_code == 202, response.json()
        wait_for(client, response.json()["id"], "running")
        return response.json()["id"]

    build("web-1")
    worker_backends = """SELECT pid FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"""
    with connection.cursor() as cursor:
        cursor.execute(worker_backends)
        before = {pid for (pid,) in cursor.fetchall()}
    assert before, "the worker closed its connection after the task"

    # when: it builds another: the same connection serves it (no new server process)
    build("web-2")
    with connection.cursor() as cursor:
        cursor.execute(worker_backends)
        assert {pid for (pid,) in cursor.fetchall()} == before

    # and when its idle connection is cut between tasks, the next task gets a fresh one
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_terminate_backend(pid) FROM ({worker_backends}) AS worker")  # noqa: S608
    build("web-3")
