"""A second real libvirt host for the multi-host suite, registered like any remote host.

`second_host` starts a libvirtd of the test's own in its own network, mount and UTS namespace
(portal/scripts/second-host.sh), reached over qemu+tcp on a veth pair; makes a dir pool and an
isolated network on it (compute.localhost, as `make run` does for this machine); registers it
through the operator API; and afterwards removes its domains, pool, network, daemons and
namespace, whatever the test did. The system libvirtd is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import libvirt
import pytest
from django.conf import settings as django_settings

from compute import localhost
from compute.drivers.libvirt import forget_connection
from compute.hosts import host_register
from compute.models import Flavor, Host
from tests.conftest import RUN_ID, client_for
from tests.e2e.conftest import BUILD_SCRIPT, TINY_IMAGE, tiny_image  # noqa: F401 (a fixture)
from tests.multihost.hosts import (
    BRIDGE,
    HostScriptError,
    NamespacedHost,
    bring_up,
    remove_libvirt_objects,
    tear_down,
    unavailable,
)

LEASE_SECONDS = "3"  # for the workers as for this process


@pytest.fixture(scope="session")
def namespaces_work():
    """Everything a second host needs, or a loud skip saying what is missing."""
    if reason := unavailable():
        pytest.skip(f"MULTI-HOST SKIPPED: {reason}")


@pytest.fixture(scope="session")
def tiny_image_file(namespaces_work):
    """The e2e suite's tiny bootable image (built once, cached), without its need for the
    system libvirtd."""
    subprocess.run(["bash", str(BUILD_SCRIPT), str(TINY_IMAGE)], check=True, capture_output=True, timeout=600)
    return TINY_IMAGE


_hosts_made = iter(range(1, 1000))


@pytest.fixture
def namespaced_libvirtd(namespaces_work):
    """A factory: each call starts another libvirtd (with its virtlogd) in namespaces of its
    own, named for this run. All are stopped, with their namespaces and files, afterwards."""
    made: list[tuple[str, str | None]] = []

    def make() -> NamespacedHost:
        name = f"mh-{RUN_ID}-{next(_hosts_made)}"
        made.append((name, None))
        try:
            host = bring_up(name)
        except HostScriptError as exc:
            pytest.fail(f"the second host did not come up: {exc}")
        made[-1] = (name, host.uri)
        return host

    yield make
    failures = []
    for name, uri in reversed(made):
        if uri:
            forget_connection(uri)  # this process's cached connection dies with the daemon
        try:
            tear_down(name)
        except HostScriptError as exc:
            failures.append(str(exc))
    assert not failures, failures


@pytest.fixture
def second_libvirtd(namespaced_libvirtd) -> NamespacedHost:
    return namespaced_libvirtd()


@pytest.fixture
def portal_hosts(namespaced_libvirtd, transactional_db, operator):
    """A factory: a namespaced libvirtd as a portal host (a dir pool and an isolated network on
    it, registered through the operator API; its queue is `host.<name>`, served by no worker
    until a test starts one). Its domains, pool and network are removed afterwards, before the
    daemons stop (this fixture depends on theirs, so it is torn down first)."""
    registered: list[NamespacedHost] = []

    def register(
        ns: NamespacedHost, *, segment: str = "", gateway_index: int = 0, shared_dir: Path | None = None
    ) -> Host:
        """`segment`: the host joins it (the gateway address at `gateway_index`; every host's
        DHCP server is static-only); joining the hosts' bridges is the test's part.
        `shared_dir`: a directory every host of the segment sees at one path (the stand-in for
        NFS), made the host's shared pool `<name>-shared`."""
        registered.append(ns)
        shared_pool = f"{ns.name}-shared" if shared_dir else ""
        if shared_dir:
            conn = libvirt.open(ns.uri)
            try:
                localhost.ensure_pool(conn, shared_pool, shared_dir)
            finally:
                conn.close()
        plan = localhost.prepare(
            ns.uri,
            pool=ns.name,
            pool_dir=ns.pool_dir / ns.name,
            network=ns.name,
            bridge=BRIDGE,
            gateway_index=gateway_index,
        )
        shaping = localhost.kernel_can_shape()
        response = client_for(operator).post(
            "/api/v1/admin/hosts",
            {
                "name": ns.name,
                "uri": ns.uri,
                "storage_pool": ns.name,
                "network": ns.name,
                "vnc_listen": ns.address,  # reachable from this side, through the veth
                "shaping": shaping,
                "segment": segment,
                "shared_pool": shared_pool,
            },
            format="json",
        )
        assert response.status_code == 201, response.json()
        # The API takes no address pool (it would pool the network's whole subnet), and picks kvm
        # wherever the host offers it, whatever ALLOW_KVM says (nested KVM hangs guests on
        # these machines): both are set again through the service the API calls.
        host = host_register(
            name=ns.name,
            uri=ns.uri,
            storage_pool=ns.name,
            network=ns.name,
            vnc_listen=ns.address,
            shaping=shaping,
            allow_kvm=django_settings.ALLOW_KVM,
            pool_first=plan["pool_first"],
            pool_last=plan["pool_last"],
            segment=segment,
            shared_pool=shared_pool,
        )
        assert str(host.pk) == response.json()["id"]
        return host

    yield register
    for ns in reversed(registered):
        remove_libvirt_objects(ns, network=ns.name, pools=(ns.name, f"{ns.name}-shared"))


@pytest.fixture
def second_host(second_libvirtd, portal_hosts) -> Host:
    """One second host, registered; see `portal_hosts`."""
    return portal_hosts(second_libvirtd)


@pytest.fixture
def shared_dir(namespaces_work):
    """A directory every namespaced host sees at the same path, standing in for NFS: outside
    the hosts' bind mounts, traversable by QEMU's user; removed afterwards."""
    path = Path(os.environ.get("PORTAL_HOSTS_DIR", "/var/lib/portal-hosts")) / f"shared-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True)
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tiny_flavor(db) -> Flavor:
    return Flavor.objects.create(name="f1.tiny", vcpus=1, memory_mb=128, disk_gb=1, bandwidth_mbit=10, traffic_gb=1)


@pytest.fixture
def host_worker(portal_hosts, start_worker):
    """`start_worker`, set up after the host so that its workers are stopped before the host
    is torn down."""
    return start_worker


@pytest.fixture
def fast_leases(settings):
    """Leases of seconds, so that the reaper (called here as beat would) acts within seconds."""
    settings.LEASE_SECONDS = int(LEASE_SECONDS)
    settings.REAP_AFTER_SECONDS = 2
