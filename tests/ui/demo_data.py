"""Demo data that looks like a portal in use, for the docs' screenshots (tests/ui/screenshots.py).

Two simulated hosts (libvirt's test driver: nothing boots, 100 GiB of disk each), the demo catalogue of seed_demo, a
few OS images, two tenants with instances built through the real services, two weeks of state
history so the month so far costs something, a few hours of 5-minute meter samples for the
charts, and invoices of the last months.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.db.models import F
from django.utils import timezone

from billing.models import Invoice, MeterSample
from compute import services
from compute.hosts import host_register
from compute.models import Flavor, Host, Image, Instance, InstanceAction, InstanceState, InstanceStateLog
from compute.sizing import Size
from tenants import services as tenant_services
from tenants.access import Actor
from tenants.models import Membership, Role, User
from tests.simulated import write_host
from tests.ui.test_tenant_pages import ed25519_key

IMAGES = [
    # name, family, version, minimum disk GiB, minimum memory MiB
    ("Debian 12 (bookworm)", "debian", "12", 2, 256),
    ("Debian 11 (bullseye)", "debian", "11", 2, 256),
    ("Ubuntu 24.04 LTS", "ubuntu", "24.04", 4, 512),
    ("AlmaLinux 9", "almalinux", "9", 10, 1024),
]
HISTORY = timedelta(days=12)  # how long the demo tenant's instances have been around
SAMPLES = 6 * 12  # six hours of 5-minute meter samples


@dataclass
class Demo:
    owner: User
    operator: User
    instance: Instance  # running, with an address, charts and a bill


def _user(email: str, *, staff: bool = False) -> User:
    user = User.objects.create_user(username=email, email=email, password="demo-Password-42")
    user.is_staff = user.is_superuser = staff
    user.save(update_fields=["is_staff", "is_superuser"])
    return user


def _images(store: Path) -> None:
    for name, family, version, disk, memory in IMAGES:
        path = f"{family}-{version}.qcow2"
        (store / path).write_bytes(b"QFI\xfb" + b"\0" * 508)
        Image.objects.create(
            name=name,
            os_family=family,
            os_version=version,
            size_bytes=512,
            source_path=path,
            min_disk_gb=disk,
            min_memory_mb=memory,
        )


def _build(actor: Actor, name: str, flavor: str, image: str) -> Instance:
    """Create through the service; with Celery eager the build runs at commit, as a worker would."""
    flavor_row, image_row = Flavor.objects.get(name=flavor), Image.objects.get(name=image)
    request = services.CreateRequest(
        name=name, image_id=str(image_row.pk), size=Size.of_flavor(flavor_row), flavor_id=str(flavor_row.pk)
    )
    instance = services.instance_create(actor=actor, request=request)
    instance.refresh_from_db()
    return instance


def _age(instance: Instance, by: timedelta) -> None:
    """Move an instance's creation, actions and state history back in time."""
    Instance.objects.filter(pk=instance.pk).update(created_at=instance.created_at - by)
    InstanceStateLog.objects.filter(instance=instance).update(at=F("at") - by)
    InstanceAction.objects.filter(instance=instance).update(started_at=F("started_at") - by)


def meter_samples(instance: Instance) -> None:
    """A working day's curve of CPU and traffic, every 5 minutes."""
    now = timezone.now().replace(second=0, microsecond=0)
    rows, cpu, rx, tx = [], 0, 0, 0
    for n in range(SAMPLES):
        wave = 0.5 + 0.4 * math.sin(n / 9) + 0.1 * math.sin(n * 1.7)
        # The charts read the first sample as covering one metering period, the others 5 minutes.
        seconds = settings.METERING_SECONDS if n == 0 else 300
        cpu_delta = int(seconds * 1e9 * instance.vcpus * (0.08 + 0.5 * wave))
        rx_delta, tx_delta = int(seconds * 130e3 * wave), int(seconds * 400e3 * wave)
        cpu, rx, tx = cpu + cpu_delta, rx + rx_delta, tx + tx_delta
        rows.append(
            MeterSample(
                instance=instance,
                taken_at=now - timedelta(minutes=5 * (SAMPLES - n)),
                cpu_time_ns=cpu,
                rx_bytes=rx,
                tx_bytes=tx,
                disk_bytes=int(1.8e9 + n * 2e6),
                cpu_ns_delta=cpu_delta,
                rx_delta=rx_delta,
                tx_delta=tx_delta,
            )
        )
    MeterSample.objects.bulk_create(rows)


def _invoices(tenant) -> None:
    today = timezone.now().date()
    for back, state, total in [
        (3, Invoice.State.PAID, "41.87"),
        (2, Invoice.State.PAID, "52.30"),
        (1, "issued", "58.12"),
    ]:
        year, month = divmod(today.year * 12 + today.month - 1 - back, 12)
        period = date(year, month + 1, 1)
        issued = datetime(period.year, period.month, 1, tzinfo=UTC) + timedelta(days=32)
        Invoice.objects.create(
            tenant=tenant,
            period=period,
            currency="EUR",
            number=f"INV-{period:%Y%m}-{back:05d}",
            state=state,
            subtotal=Decimal(total),
            total=Decimal(total),
            issued_at=issued,
            due_at=issued + timedelta(days=14),
            paid_at=issued + timedelta(days=5) if state == Invoice.State.PAID else None,
        )


@contextmanager
def only_on(host: Host | None) -> Iterator[None]:
    """Builds inside go to `host` (all hosts when None); outside, `host` takes no more."""
    others = Host.objects.exclude(pk=host.pk) if host else Host.objects.none()
    others.update(status=Host.Status.DISABLED)
    yield
    others.update(status=Host.Status.UP)
    if host is not None:
        Host.objects.filter(pk=host.pk).update(status=Host.Status.DISABLED)


def make_demo(*, work_dir: Path, image_store: Path, guest_host: Host | None = None) -> Demo:
    """With `guest_host` (a real hypervisor), web-1 is a real guest of the tiny Linux there."""
    for n, name in enumerate(["hv-fra1-01", "hv-fra1-02"], start=1):
        host_register(**write_host(work_dir, name=name, subnet=n, cpus=32, memory_mb=131072))
    call_command("seed_demo", stdout=StringIO())  # flavors, prices, SLA tiers; hosts exist already
    _images(image_store)

    owner, operator = _user("maria@acme.example"), _user("ops@cloud.example", staff=True)
    acme = tenant_services.tenant_create(name="Acme Web Studio", owner=owner)
    member = _user("jonas@acme.example")
    Membership.objects.create(user=member, tenant=acme, role=Role.MEMBER)
    actor = Actor(owner, acme, Role.OWNER)
    tenant_services.sshkey_create(actor=actor, name="maria-laptop", public_key=ed25519_key(11))
    tenant_services.token_create(actor=actor, name="deploy-ci", scope="write")

    with only_on(guest_host):
        image = "Tiny Linux (busybox)" if guest_host else "Debian 12 (bookworm)"
        web = _build(actor, "web-1", "s1.nano" if guest_host else "s1.medium", image)
    db = _build(actor, "db-1", "s1.small", "Debian 12 (bookworm)")
    staging = _build(actor, "staging", "s1.nano", "Ubuntu 24.04 LTS")
    services.instance_stop(actor=actor, instance=staging)
    for instance in (web, db, staging):
        _age(instance, HISTORY)
    meter_samples(web)
    _invoices(acme)

    other = tenant_services.tenant_create(name="Nordlicht Labs", owner=_user("lea@nordlicht.example"))
    other_actor = Actor(other.memberships.get().user, other, Role.OWNER)
    _build(other_actor, "ci-runner", "s1.medium", "AlmaLinux 9")
    broken = _build(other_actor, "gpu-test", "s1.nano", "Ubuntu 24.04 LTS")
    Instance.objects.filter(pk=broken.pk).update(
        state=InstanceState.ERROR, error_step="image", error_message="image download interrupted"
    )
    if guest_host is not None:
        Host.objects.filter(pk=guest_host.pk).update(status=Host.Status.UP)
    web.refresh_from_db()
    return Demo(owner=owner, operator=operator, instance=web)
