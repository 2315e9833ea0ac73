"""place() claims the host candidate_hosts() ranks first, under every filter and weigher.

place() claims the best host in one hand-written statement; candidate_hosts() is the ORM
query that states the rules. Host rows only: placement never talks to a hypervisor.
"""

import random
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from compute import scheduler
from compute.models import Host, Image
from compute.sizing import Size

pytestmark = pytest.mark.django_db

SIZE = Size(vcpus=2, memory_mb=2048, disk_gb=20, bandwidth_mbit=100, traffic_gb=100, sla_percent=Decimal("99.9"))


def make_hosts(count: int, seed: int = 3) -> list[Host]:
    """Hosts up, down, disabled and silent, full to half empty, in two segments; two of them
    with the same free memory, so that the name breaks the tie."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        cpus = rng.choice([4, 8, 16])
        memory = cpus * 2048
        fill = rng.random()
        rows.append(
            {
                "status": rng.choice([Host.Status.UP] * 8 + [Host.Status.DOWN, Host.Status.DISABLED]),
                "vcpus_total": cpus,
                "memory_mb_total": memory,
                "disk_gb_total": 200,
                "ram_ratio": rng.choice([Decimal("1.00"), Decimal("1.50")]),
                "vcpus_used": int(cpus * 4 * fill),
                "memory_mb_used": int(memory * fill),
                "disk_gb_used": int(200 * rng.random()),
                "segment": rng.choice(["a", "b"]),
                "shared_pool": rng.choice(["", "", "shared"]),
                "heartbeat_asked_at": timezone.now() - timedelta(hours=1) if rng.random() < 0.1 else None,
            }
        )
    rows.append({**rows[0], "status": Host.Status.UP, "heartbeat_asked_at": None})
    rows.insert(0, dict(rows[-1]))
    return Host.objects.bulk_create(
        Host(name=f"place-{n:03d}", uri="test:///default", queue=f"host.place-{n:03d}", domain_type="test", **row)
        for n, row in enumerate(rows)
    )


def expected(image: Image, *, exclude=(), segment=None, shared=False) -> Host | None:
    hosts = scheduler.candidate_hosts(SIZE, image).exclude(pk__in=list(exclude))
    if segment is not None:
        hosts = hosts.filter(segment=segment)
    if shared:
        hosts = hosts.exclude(shared_pool="")
    return hosts.first()


@pytest.fixture
def image(db):
    return Image.objects.create(name="img", os_family="linux", os_version="1", size_bytes=1, source_path="x.qcow2")


@pytest.mark.parametrize("weigher", ["spread", "pack"])
def test_it_claims_the_host_the_rules_rank_first(settings, image, weigher):
    # given: hosts up, down, disabled, silent, full and half full, in two segments
    settings.SCHEDULER_WEIGHER = weigher
    hosts = make_hosts(60)
    cases = [{}, {"segment": "a"}, {"segment": "b"}, {"exclude": [expected(image).pk]}, {"shared": True}]
    for case in cases:
        best = expected(image, **case)
        with transaction.atomic():
            # when
            placed = scheduler.place(SIZE, image, **case)
            # then: the first of the rules' order, with the size added to its claim
            assert placed.pk == best.pk
            fresh = Host.objects.get(pk=best.pk)
            assert fresh.memory_mb_used == best.memory_mb_used + SIZE.memory_mb
            assert (placed.memory_mb_used, placed.vcpus_used) == (fresh.memory_mb_used, fresh.vcpus_used)
            assert placed.orphans == {} and placed.created_at == best.created_at
            transaction.set_rollback(True)
    assert len(hosts) == 62


def test_it_places_an_image_bound_to_a_host_on_that_host_only(image):
    hosts = make_hosts(20)
    bound = min((h for h in Host.objects.filter(status=Host.Status.UP, heartbeat_asked_at=None)), key=lambda h: h.name)
    Host.objects.filter(pk=bound.pk).update(memory_mb_used=0, vcpus_used=0, disk_gb_used=0)
    image.host = bound
    image.save()
    assert scheduler.place(SIZE, image).pk == bound.pk
    assert len(hosts) == 22


def test_it_refuses_when_no_host_has_room(image):
    make_hosts(10)
    Host.objects.update(memory_mb_used=1_000_000)
    with pytest.raises(scheduler.NoValidHost):
        scheduler.place(SIZE, image)
