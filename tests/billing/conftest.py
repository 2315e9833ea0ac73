"""Helpers of the billing tests: a clock in UTC, priced flavors, instances made through the real
services (run eagerly on libvirt's test driver), and traffic samples in the driver's shape."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.test import TestCase
from pypdf import PdfReader

from billing import metering
from billing.models import FlavorPrice, OverPolicy, StoppedPolicy
from compute import services
from compute.drivers.base import DomainStats
from compute.models import Flavor, Instance
from compute.sizing import Size
from portal.celery import app as celery_app
from tests.conftest import actor

MIB, GIB = 1024**2, 1024**3


@pytest.fixture
def tasks_inline(db):
    """Run each queued task in this process when the test's transaction would commit.

    Like tests.conftest's `eager`, without a real commit: the test's transaction is rolled
    back at the end instead of every table being flushed, which keeps this suite fast.
    """
    before = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = before


def committed(fn, *args, **kwargs):
    """Call a service as a request would, running what it queued on commit."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        return fn(*args, **kwargs)


def pdf_pages(pdf: bytes) -> list[str]:
    """The text of each page of a PDF, read back as a PDF reader does."""
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def priced_flavor(
    name: str,
    *,
    hourly: str = "0.010",
    cap: str = "5.00",
    traffic_gb: int = 1,
    bandwidth_mbit: int = 100,
    policy: str = OverPolicy.BILL,
    stopped: str = StoppedPolicy.DISK,
    overage: str = "0.02",
    disk_gb: int = 10,
) -> Flavor:
    flavor = Flavor.objects.create(
        name=name,
        vcpus=1,
        memory_mb=512,
        disk_gb=disk_gb,
        bandwidth_mbit=bandwidth_mbit,
        traffic_gb=traffic_gb,
        sla_percent=Decimal("99.900"),
    )
    FlavorPrice.objects.create(
        flavor=flavor,
        hourly=Decimal(hourly),
        monthly_cap=Decimal(cap),
        over_policy=policy,
        stopped_policy=stopped,
        overage_gb=Decimal(overage),
    )
    return flavor


def create(who, tenant, image, name: str, flavor: Flavor, when: datetime | None = None) -> Instance:
    """An instance made by `who` and settled running (needs `tasks_inline` or `eager`)."""
    request = services.CreateRequest(
        name=name, image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=flavor.pk
    )
    if when is None:
        instance = committed(services.instance_create, actor=actor(who, tenant), request=request)
    else:
        with time_machine.travel(when, tick=False):
            instance = committed(services.instance_create, actor=actor(who, tenant), request=request)
    instance.refresh_from_db()
    assert instance.state == "running"
    return instance


def act(fn, who, tenant, instance: Instance, when: datetime | None = None, **kw) -> Instance:
    """Run a compute service on the instance as `who`, optionally at a given moment."""
    current = Instance.objects.get(pk=instance.pk)
    if when is None:
        committed(fn, actor=actor(who, tenant), instance=current, **kw)
    else:
        with time_machine.travel(when, tick=False):
            committed(fn, actor=actor(who, tenant), instance=current, **kw)
    current.refresh_from_db()
    return current


def stats(instance: Instance, *, tx: int = 0, rx: int = 0, cpu_ns: int = 0) -> DomainStats:
    return DomainStats(uuid=str(instance.pk), power="running", cpu_time_ns=cpu_ns, rx_bytes=rx, tx_bytes=tx)


def sample(host, when: datetime, *pairs) -> int:
    """Ingest one collection: (instance, tx bytes) pairs, rx half of tx."""
    return metering.ingest(host=host, taken_at=when, stats=[stats(i, tx=tx, rx=tx // 2) for i, tx in pairs])
