"""Fixtures of the compute tests: threads with their own connections, extra tenants, small
flavors, driver injection, and a Redis namespace of this run's own.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.db import connection

from compute import driver_refs, services
from compute.models import Flavor, Host
from compute.sizing import Size
from tenants import services as tenant_services
from tenants.models import Quota, User
from tests.conftest import actor
from tests.processes import RUN_PREFIX, redis_client


@pytest.fixture
def queued():
    """How many messages wait on a Celery queue of this run."""
    client = redis_client()

    def count(queue: str) -> int:
        return client.llen(f"{RUN_PREFIX}:{queue}")

    yield count
    client.close()


@pytest.fixture
def make_tenant(db):
    """A factory of further tenants, each with its own owner: (owner, tenant)."""
    numbers = itertools.count(1)

    def make(**quota) -> tuple[User, object]:
        n = next(numbers)
        owner = User.objects.create_user(username=f"owner{n}@example.com", email=f"owner{n}@example.com")
        tenant = tenant_services.tenant_create(name=f"Tenant {n}", owner=owner)
        if quota:
            Quota.objects.filter(tenant=tenant).update(**quota)
        return owner, tenant

    return make


@pytest.fixture
def tiny_flavor(db):
    return Flavor.objects.create(
        name="t1.tiny",
        vcpus=1,
        memory_mb=128,
        disk_gb=1,
        bandwidth_mbit=10,
        traffic_gb=10,
        sla_percent=Decimal("99.0"),
    )


@pytest.fixture
def sized_host(simulated_host):
    """A simulated host with the given CPUs and memory and overcommit ratios."""

    def make(*, cpus: int, memory_mb: int, cpu_ratio: str = "1.00", ram_ratio: str = "1.00") -> Host:
        host = simulated_host(cpus=cpus, memory_mb=memory_mb)
        Host.objects.filter(pk=host.pk).update(cpu_ratio=Decimal(cpu_ratio), ram_ratio=Decimal(ram_ratio))
        host.refresh_from_db()
        return host

    return make


@pytest.fixture
def concurrently():
    """Run the calls in threads released together; each result, or the exception it raised.

    Each thread opens its own database connection before the start line (so connecting does
    not stagger them) and closes it at the end.
    """

    def run(calls: list[Callable[[], object]]) -> list[object]:
        start_line = threading.Barrier(len(calls))
        results: list[object] = [None] * len(calls)

        def work(index: int, call: Callable[[], object]) -> None:
            try:
                connection.ensure_connection()
                start_line.wait(timeout=30)
                results[index] = call()
            except BaseException as exc:  # handed back for the test to assert on
                results[index] = exc
            finally:
                connection.close()

        threads = [threading.Thread(target=work, args=(i, call)) for i, call in enumerate(calls)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads), "a request thread hung"
        return results

    return run


@pytest.fixture
def use_driver(monkeypatch):
    """Make the worker side build its driver from `cls` (a subclass of the real LibvirtDriver)."""

    def use(cls) -> None:
        monkeypatch.setattr(driver_refs, "driver_for", cls)

    return use


@pytest.fixture
def building(alice, tenant_a, host, image, flavor):
    """An instance whose build is queued but has not run (nothing is on the host yet)."""
    request = services.CreateRequest(
        name="web-1", image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=str(flavor.pk)
    )
    return services.instance_create(actor=actor(alice, tenant_a), request=request)
