"""Work in flight survives dying processes, and racing tasks leave nothing behind.

Real Celery worker processes on the real libvirtd (qemu:///system): a worker is told by
FAULT_PAUSE_AT to hold at one step, killed there with SIGKILL (by its own process id), and a
fresh worker on the same host queue must finish the work exactly once after the reaper (called
here as beat would call it) finds the instance held by nobody. Leases are seconds long here so
that the whole story takes seconds; in production they are LEASE_SECONDS (30 s).
"""

from __future__ import annotations

import time

import libvirt
import pytest
from django.db import connection

from compute import services, tasks
from compute.drivers.libvirt import disk_volume, seed_volume
from compute.drivers.libvirt_xml import dhcp_hosts_of
from compute.models import Flavor, Instance, InstanceAction, InstanceStateLog
from compute.sizing import Size
from tests.conftest import actor

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LEASE = "3"
RESUME_WITHIN = 120.0  # what the issue asks: within two minutes


@pytest.fixture
def fast_leases(settings):
    settings.LEASE_SECONDS = int(LEASE)
    settings.REAP_AFTER_SECONDS = 2


@pytest.fixture
def flavor(db):
    return Flavor.objects.create(name="f1.tiny", vcpus=1, memory_mb=128, disk_gb=1, bandwidth_mbit=10, traffic_gb=1)


def worker_env(pause_at: str = "", pause_seconds: int = 600) -> dict[str, str]:
    return {"LEASE_SECONDS": LEASE, "FAULT_PAUSE_AT": pause_at, "FAULT_PAUSE_SECONDS": str(pause_seconds)}


def wait_until(what: str, check, within: float, every: float = 0.2, *, reap: bool = False):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := check():
            return result
        if reap:
            tasks.reap_stalled.apply()  # what beat does every 15 s
        time.sleep(every)
    raise AssertionError(f"{what}: not within {within} s")


def step_running(instance: Instance, action: str, step: str) -> bool:
    return InstanceAction.objects.filter(instance=instance, action=action, step=step, status="running").exists()


def state(instance: Instance) -> str:
    return Instance.objects.values_list("state", flat=True).get(pk=instance.pk)


def create(alice, tenant_a, image, flavor, name: str) -> Instance:
    request = services.CreateRequest(
        name=name, image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=str(flavor.pk)
    )
    return services.instance_create(actor=actor(alice, tenant_a), request=request)


def on_host(hypervisor: libvirt.virConnect, host, instance: Instance) -> dict:
    """Everything of this instance on the host."""
    pool = hypervisor.storagePoolLookupByName(host.storage_pool)
    pool.refresh(0)
    names = set(pool.listVolumes())
    try:
        dom = hypervisor.lookupByUUIDString(str(instance.pk))
        domain = "running" if dom.isActive() else "defined"
    except libvirt.libvirtError:
        domain = None
    net = hypervisor.networkLookupByName(host.network)
    entries = [e for e in dhcp_hosts_of(net.XMLDesc(0)) if e["mac"].lower() == instance.mac_address.lower()]
    return {
        "domain": domain,
        "volumes": sorted(n for n in (disk_volume(str(instance.pk)), seed_volume(str(instance.pk))) if n in names),
        "dhcp": len(entries),
    }


def assert_resumed_once(instance: Instance, settled: str) -> None:
    """Settled once, with no step left marked running, and the resumption on record."""
    assert InstanceStateLog.objects.filter(instance=instance, state=settled).count() == 1
    assert not InstanceAction.objects.filter(instance=instance, status="running").exists()
    assert InstanceAction.objects.filter(instance=instance, step="resume").exists()
    interrupted = InstanceAction.objects.filter(instance=instance, status="failed", error__startswith="Interrupted")
    assert interrupted.count() == 1


BUILD_STEPS = ["upload", "image", "disk", "seed", "dhcp", "define", "start"]


@pytest.mark.parametrize("step", BUILD_STEPS)
def test_it_resumes_a_build_whose_worker_was_killed_at_each_step(
    step, start_worker, fast_leases, hypervisor, real_host, tiny_image, flavor, alice, tenant_a
):
    # given: the host's worker holds at `step` of a build
    doomed = start_worker(real_host.queue, worker_env(f"create:{step}"))
    instance = create(alice, tenant_a, tiny_image, flavor, f"kill-{step}")
    # "upload" holds inside the image step, with the host's image lock taken
    row = "image" if step == "upload" else step
    wait_until(f"the build to reach {step}", lambda: step_running(instance, "create", row), 60)
    time.sleep(0.5)

    # when: it is killed there, and another worker serves the queue
    doomed.process.kill()
    doomed.process.wait(timeout=10)
    start_worker(real_host.queue, worker_env())

    # then: the build finishes within two minutes, exactly once
    began = time.monotonic()
    wait_until("the build to finish", lambda: state(instance) == "running", RESUME_WITHIN, reap=True)
    resumed_after = time.monotonic() - began
    assert resumed_after < RESUME_WITHIN
    assert_resumed_once(instance, "running")
    assert on_host(hypervisor, real_host, instance) == {
        "domain": "running",
        "volumes": sorted([disk_volume(str(instance.pk)), seed_volume(str(instance.pk))]),
        "dhcp": 1,
    }
    assert InstanceAction.objects.filter(instance=instance, action="create", step="start", status="done").count() == 1

    services.instance_delete(actor=actor(alice, tenant_a), instance=instance)
    wait_until("the delete", lambda: state(instance) == "deleted", 60)


def test_it_resumes_a_stop_whose_worker_was_killed(
    start_worker, fast_leases, hypervisor, real_host, tiny_image, flavor, alice, tenant_a
):
    builder = start_worker(real_host.queue, worker_env())
    instance = create(alice, tenant_a, tiny_image, flavor, "kill-stop")
    wait_until("the build", lambda: state(instance) == "running", 90)
    builder.process.terminate()
    builder.process.wait(timeout=20)
    doomed = start_worker(real_host.queue, worker_env("stop:stop"))

    services.instance_stop(actor=actor(alice, tenant_a), instance=instance)
    wait_until("the stop to begin", lambda: step_running(instance, "stop", "stop"), 60)
    doomed.process.kill()
    doomed.process.wait(timeout=10)
    start_worker(real_host.queue, worker_env())

    wait_until("the stop to finish", lambda: state(instance) == "stopped", RESUME_WITHIN, reap=True)
    assert_resumed_once(instance, "stopped")
    assert on_host(hypervisor, real_host, instance)["domain"] == "defined"

    services.instance_delete(actor=actor(alice, tenant_a), instance=instance)
    wait_until("the delete", lambda: state(instance) == "deleted", 60)


def test_it_retries_a_build_whose_database_connection_was_cut(
    start_worker, fast_leases, hypervisor, real_host, tiny_image, flavor, alice, tenant_a
):
    # given: a worker holding briefly at the define step
    start_worker(real_host.queue, worker_env("create:define", pause_seconds=3))
    instance = create(alice, tenant_a, tiny_image, flavor, "db-cut")
    wait_until("the build to reach define", lambda: step_running(instance, "create", "define"), 60)

    # when: every connection to the test database but this test's own is cut (the worker's)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )

    # then: the build is retried on a fresh connection and ends running, with no manual step
    wait_until("the build to finish", lambda: state(instance) == "running", 90)
    assert InstanceStateLog.objects.filter(instance=instance, state="running").count() == 1
    assert on_host(hypervisor, real_host, instance)["domain"] == "running"

    services.instance_delete(actor=actor(alice, tenant_a), instance=instance)
    wait_until("the delete", lambda: state(instance) == "deleted", 60)


# 20 races in all; more where the build's own work is longest.
RACES_PER_STEP = {"image": 3, "disk": 3, "seed": 3, "dhcp": 3, "define": 4, "start": 4}


@pytest.mark.parametrize("step", list(RACES_PER_STEP))
def test_it_leaves_nothing_when_deleted_while_building(
    step, start_worker, fast_leases, hypervisor, real_host, tiny_image, flavor, alice, tenant_a
):
    # given: a worker running tasks side by side, each build holding a moment at `step`
    start_worker(real_host.queue, worker_env(f"create:{step}", pause_seconds=2), threads=4)
    for n in range(RACES_PER_STEP[step]):
        instance = create(alice, tenant_a, tiny_image, flavor, f"race-{step}-{n}")
        wait_until(f"the build to reach {step}", lambda i=instance: step_running(i, "create", step), 60)

        # when: it is deleted mid-build (the delete task runs beside the build)
        services.instance_delete(actor=actor(alice, tenant_a), instance=instance)

        # then: deleted, with no domain, volume or DHCP entry left on the host
        wait_until("the delete", lambda i=instance: state(i) == "deleted", 90)
        assert on_host(hypervisor, real_host, instance) == {"domain": None, "volumes": [], "dhcp": 0}
        assert not InstanceAction.objects.filter(instance=instance, status="running").exists()
