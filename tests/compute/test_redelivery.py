"""The build task run twice, cut short by a dying worker, or met by host errors.

Celery acks late, so a worker that dies mid-task leaves the message to be delivered again;
whatever the first run left on the host, the run that completes must leave exactly one of
each thing. Tasks are run in this process with `apply()`; the driver is the real one over
libvirt's test driver, with a fault injected at one call.
"""

import libvirt
import pytest

from compute import operations, services, tasks
from compute.models import Instance, InstanceAction
from tests.compute.hypervisor import (
    FaultPlan,
    WorkerCrash,
    assert_built_once,
    crashing_driver,
    faulty_driver,
    holdings,
)


def step_rows(instance: Instance) -> list[tuple[str, str]]:
    return list(InstanceAction.objects.filter(instance=instance).exclude(step="").values_list("step", "status"))


def test_it_does_nothing_when_the_build_runs_again(building):
    # given: a completed build
    assert tasks.provision.apply(args=[str(building.pk)]).get() == "running"
    done = assert_built_once(building)
    rows = step_rows(building)
    # when: the same message is delivered again
    result = tasks.provision.apply(args=[str(building.pk)]).get()
    # then: nothing ran and nothing changed
    assert result == "skipped"
    again = assert_built_once(building)
    assert step_rows(building) == rows
    assert (again.launched_at, again.vnc_port, again.power_state) == (done.launched_at, done.vnc_port, done.power_state)


@pytest.mark.parametrize(
    "method", ["ensure_base_image", "ensure_disk", "ensure_seed", "ensure_dhcp", "ensure_defined", "start"]
)
def test_it_completes_a_build_whose_worker_died_half_way(building, use_driver, method):
    # given: the worker dies right after the host did `method`
    use_driver(crashing_driver(method))
    with pytest.raises(WorkerCrash):
        operations.provision(str(building.pk))
    building.refresh_from_db()
    assert building.state == "building"
    # when: the message is delivered again
    result = tasks.provision.apply(args=[str(building.pk)]).get()
    # then: the build finished with one domain, one disk, one seed and one DHCP entry
    assert result == "running"
    assert_built_once(building)


def test_it_rebuilds_nothing_twice_after_a_crash_after_the_disk(building, use_driver):
    use_driver(crashing_driver("ensure_disk"))
    with pytest.raises(WorkerCrash):
        operations.provision(str(building.pk))
    assert holdings(building.host, building).volumes == [f"inst-{building.pk}-disk.qcow2"]
    tasks.provision.apply(args=[str(building.pk)])
    # the dead worker's disk step is marked interrupted in the log; the second run did every step
    assert step_rows(building) == [
        ("image", "done"),
        ("disk", "failed"),
        *[(name, "done") for name in ("image", "disk", "seed", "dhcp", "firewall", "define", "start")],
    ]
    assert_built_once(building)


def test_it_retries_a_transient_host_error_and_ends_running(building, use_driver):
    # given: the host drops the connection twice when the DHCP entry is written
    plan = FaultPlan("networkLookupByName", libvirt.VIR_ERR_NO_CONNECT, times=2)
    use_driver(faulty_driver(plan))
    # when
    result = tasks.provision.apply(args=[str(building.pk)]).get()
    # then: retried until it worked
    assert result == "running"
    assert plan.raised == 2
    assert [row for row in step_rows(building) if row[0] == "dhcp"] == [
        ("dhcp", "failed"),
        ("dhcp", "failed"),
        ("dhcp", "done"),
    ]
    instance = assert_built_once(building)
    assert instance.error_step == "" and instance.error_message == ""


def test_it_gives_up_on_a_transient_error_that_outlasts_the_retries(building, use_driver):
    plan = FaultPlan("networkLookupByName", libvirt.VIR_ERR_NO_CONNECT, times=100)
    use_driver(faulty_driver(plan))
    assert tasks.provision.apply(args=[str(building.pk)]).get() == "error"
    assert plan.raised == 1 + tasks.RETRY["max_retries"]
    building.refresh_from_db()
    assert (building.state, building.error_step) == ("error", "dhcp")


@pytest.mark.parametrize(
    ("method", "failing_step"),
    [
        ("storagePoolLookupByName", "image"),
        ("networkLookupByName", "dhcp"),
        ("defineXML", "define"),
        ("lookupByUUIDString", "start"),
    ],
)
def test_it_stops_at_a_permanent_host_error_naming_the_step(building, use_driver, method, failing_step):
    # given: the host refuses one call for good
    plan = FaultPlan(method, libvirt.VIR_ERR_OPERATION_FAILED, times=100)
    use_driver(faulty_driver(plan))
    # when
    result = tasks.provision.apply(args=[str(building.pk)]).get()
    # then: no retry, ERROR naming the step, the step's failure in the action log
    assert result == "error"
    assert plan.raised == 1
    building.refresh_from_db()
    assert building.state == "error"
    assert building.error_step == failing_step
    assert "injected failure 1" in building.error_message
    assert step_rows(building)[-1] == (failing_step, "failed")


def test_it_finishes_a_failed_build_cleanly_when_an_operator_retries(building, use_driver, alice, tenant_a):
    # given: a build that failed for good at its define step, after disk, seed and DHCP
    use_driver(faulty_driver(FaultPlan("defineXML", libvirt.VIR_ERR_OPERATION_FAILED, times=1)))
    tasks.provision.apply(args=[str(building.pk)])
    building.refresh_from_db()
    assert (building.state, building.error_step) == ("error", "define")
    # when: an operator retries it
    services.instance_retry(actor=None, instance=building)
    result = tasks.provision.apply(args=[str(building.pk)]).get()
    # then
    assert result == "running"
    assert_built_once(building)


def test_it_brings_a_launched_instance_in_error_back_without_wiping_its_disk(building, host):
    from compute.drivers.libvirt import connect, disk_volume

    # given: an instance that ran, whose domain was lost and which went to ERROR
    assert tasks.provision.apply(args=[str(building.pk)]).get() == "running"
    conn = connect(host.uri)
    disk = conn.storagePoolLookupByName(host.storage_pool).storageVolLookupByName(disk_volume(str(building.pk)))
    before = (disk.key(), disk.info())
    dom = conn.lookupByUUIDString(str(building.pk))
    dom.destroy()
    dom.undefine()
    Instance.objects.filter(pk=building.pk).update(state="error", error_step="sync")
    launched = Instance.objects.get(pk=building.pk).launched_at

    # when: an operator retries it
    services.instance_retry(actor=None, instance=building)
    result = tasks.provision.apply(args=[str(building.pk)]).get()

    # then: running again on the same disk, defined anew, its launch time kept
    assert result == "running"
    kept = conn.storagePoolLookupByName(host.storage_pool).storageVolLookupByName(disk_volume(str(building.pk)))
    assert (kept.key(), kept.info()) == before
    assert conn.lookupByUUIDString(str(building.pk)).isActive()
    assert Instance.objects.get(pk=building.pk).launched_at == launched


def test_it_can_resume_the_work_of_every_in_flight_state():
    from compute.transitions import IN_FLIGHT

    # A state the reaper finds but cannot resume would stay in flight for ever.
    assert set(tasks.TASK_FOR_STATE) == IN_FLIGHT
