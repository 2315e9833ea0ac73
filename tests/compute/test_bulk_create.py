"""Bulk create: N instances of one image and size in one transaction, all of them or none.

The failing cases run on real commits (transactional_db): the host claims are conditional
UPDATEs inside the create's transaction, and these tests check that its rollback really gives
them back, with the instance, address, audit and idempotency rows of those made before the
one that could not be placed.
"""

import ipaddress

import pytest

from base.errors import Conflict, Invalid, QuotaExceeded
from compute import services
from compute.models import Host, IdempotencyKey, Instance, InstanceAction, IpAllocation, IpPool
from compute.sizing import Size
from tenants.models import AuditEvent, Quota
from tests.conftest import actor


def request_for(image, flavor, name="web-{n}", **extra) -> services.CreateRequest:
    return services.CreateRequest(
        name=name, image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=str(flavor.pk), **extra
    )


def nothing_made(*hosts: Host) -> None:
    """No row of a create is left, and every host's claims are what they were (none)."""
    assert not Instance.objects.exists()
    assert not IpAllocation.objects.exists()
    assert not InstanceAction.objects.exists()
    assert not IdempotencyKey.objects.exists()
    assert not AuditEvent.objects.filter(action="instance.create").exists()
    for host in hosts:
        host.refresh_from_db()
        assert (host.vcpus_used, host.memory_mb_used, host.disk_gb_used) == (0, 0, 0), host.name


def test_it_makes_n_instances_named_from_the_pattern(alice, tenant_a, host, image, flavor):
    # when
    made = services.instances_create(actor=actor(alice, tenant_a), request=request_for(image, flavor), count=3)
    # then: three instances, numbered in order, each with its own address, MAC and DNS label
    assert [i.name for i in made] == ["web-1", "web-2", "web-3"]
    assert [i.dns_label for i in made] == ["web-1", "web-2", "web-3"]
    assert len({i.ip_address for i in made}) == len({i.mac_address for i in made}) == 3
    stored = dict(IpAllocation.objects.values_list("instance_id", "address"))
    assert stored == {i.pk: i.ip_address for i in made}
    # each placed and claimed like a single create, each audited and built by its own task
    host.refresh_from_db()
    assert (host.vcpus_used, host.memory_mb_used, host.disk_gb_used) == (3, 3 * 512, 3 * 10)
    assert InstanceAction.objects.filter(action="create").count() == 3
    assert AuditEvent.objects.filter(action="instance.create").count() == 3
    assert all(i.state == "building" and i.security_groups.count() == 1 for i in made)


def test_each_of_a_bulk_create_gets_a_dns_label_no_other_holds(alice, tenant_a, host, image, flavor):
    # given: a pattern whose number falls past a DNS label's 63 characters, so every name of
    # the batch cuts down to one label
    who = actor(alice, tenant_a)
    # when
    made = services.instances_create(actor=who, request=request_for(image, flavor, "a" * 70 + "-{n}"), count=3)
    # then: the first has it, the others are told apart by their ids
    first, *others = made
    assert first.dns_label == "a" * 63
    assert [i.dns_label for i in others] == [f"{'a' * 56}-{i.pk.hex[:6]}" for i in others]
    # when: one more, one at a time, whose name cuts down to it too
    one = services.instance_create(actor=who, request=request_for(image, flavor, "a" * 64))
    assert one.dns_label == f"{'a' * 56}-{one.pk.hex[:6]}"


def test_it_pads_the_number_when_the_pattern_asks(alice, tenant_a, host, image, flavor):
    made = services.instances_create(
        actor=actor(alice, tenant_a), request=request_for(image, flavor, "db-{n:02}.eu"), count=3
    )
    assert [i.name for i in made] == ["db-01.eu", "db-02.eu", "db-03.eu"]


@pytest.mark.parametrize(
    ("pattern", "count", "names"),
    [
        ("web-{n}", 1, ["web-1"]),
        ("web", 1, ["web"]),
        ("{n}-{n:03}", 2, ["1-001", "2-002"]),
        ("a{n:2}b-{n}", 2, ["a{n:2}b-1", "a{n:2}b-2"]),  # not a placeholder: kept as typed
        ("{0}{n}{x.__class__}", 1, ["{0}1{x.__class__}"]),  # never str.format
    ],
)
def test_it_expands_patterns(settings, pattern, count, names):
    assert services.names_from_pattern(pattern, count) == names


def test_it_refuses_several_instances_without_a_number_in_the_name(alice, tenant_a, host, image, flavor):
    with pytest.raises(Invalid) as refused:
        services.instances_create(actor=actor(alice, tenant_a), request=request_for(image, flavor, "web"), count=2)
    assert refused.value.field == "name"
    assert "{n}" in str(refused.value.message)
    nothing_made(host)


@pytest.mark.parametrize("count", [0, -1, 21])
def test_it_refuses_a_count_outside_its_range(alice, tenant_a, host, image, flavor, count):
    with pytest.raises(Invalid) as refused:
        services.instances_create(actor=actor(alice, tenant_a), request=request_for(image, flavor), count=count)
    assert refused.value.field == "count"
    nothing_made(host)


def test_it_follows_the_configured_maximum(settings, alice, tenant_a, host, image, tiny_flavor):
    settings.BULK_CREATE_MAX = 2
    with pytest.raises(Invalid) as refused:
        services.instances_create(actor=actor(alice, tenant_a), request=request_for(image, tiny_flavor), count=3)
    assert refused.value.field == "count"
    assert "1 to 2" in str(refused.value.message)


def test_it_refuses_a_pattern_that_makes_overlong_names(alice, tenant_a, host, image, flavor):
    pattern = "x" * 254 + "{n}"
    with pytest.raises(Invalid) as refused:
        services.instances_create(actor=actor(alice, tenant_a), request=request_for(image, flavor, pattern), count=10)
    assert refused.value.field == "name"
    nothing_made(host)


def test_it_makes_none_when_one_name_is_taken(alice, tenant_a, host, image, flavor):
    # given: web-2 and web-3 exist
    acting = actor(alice, tenant_a)
    for name in ("web-3", "web-2"):
        services.instance_create(actor=acting, request=request_for(image, flavor, name))
    # when
    with pytest.raises(Invalid) as refused:
        services.instances_create(actor=acting, request=request_for(image, flavor), count=4)
    # then: a refusal naming the field and the taken names, and nothing more made
    assert refused.value.field == "name"
    assert str(refused.value.message).endswith(": web-2, web-3.")
    assert sorted(Instance.objects.values_list("name", flat=True)) == ["web-2", "web-3"]
    host.refresh_from_db()
    assert host.vcpus_used == 2


def test_it_reuses_the_names_of_deleted_instances(alice, tenant_a, host, image, flavor):
    acting = actor(alice, tenant_a)
    old = services.instance_create(actor=acting, request=request_for(image, flavor, "web-1"))
    Instance.objects.filter(pk=old.pk).update(state="deleted")
    made = services.instances_create(actor=acting, request=request_for(image, flavor), count=2)
    assert [i.name for i in made] == ["web-1", "web-2"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("limits", "resource", "in_use", "requested", "limit"),
    [
        ({"instances": 3}, "instances", 1, 3, 3),
        ({"vcpus": 3}, "vcpus", 1, 3, 3),
        ({"memory_mb": 1536}, "memory_mb", 512, 3 * 512, 1536),
        ({"disk_gb": 35}, "disk_gb", 10, 30, 35),
    ],
)
def test_it_claims_the_quota_for_all_at_once_or_not_at_all(
    alice, tenant_a, host, image, flavor, limits, resource, in_use, requested, limit
):
    # given: one instance already, and a quota with room for two more
    acting = actor(alice, tenant_a)
    first = services.instance_create(actor=acting, request=request_for(image, flavor, "first"))
    Quota.objects.filter(tenant=tenant_a).update(**limits)
    # when: three more are asked for
    with pytest.raises(QuotaExceeded) as refused:
        services.instances_create(actor=acting, request=request_for(image, flavor), count=3)
    # then: the refusal names the resource with the totals, and no one of the three is made
    assert (refused.value.resource, refused.value.in_use, refused.value.requested, refused.value.limit) == (
        resource,
        in_use,
        requested,
        limit,
    )
    assert list(Instance.objects.values_list("pk", flat=True)) == [first.pk]
    host.refresh_from_db()
    assert (host.vcpus_used, host.memory_mb_used, host.disk_gb_used) == (1, 512, 10)
    # and two fit
    assert len(services.instances_create(actor=acting, request=request_for(image, flavor), count=2)) == 2


@pytest.mark.django_db(transaction=True)
def test_it_makes_none_when_the_hosts_have_room_for_only_some(alice, tenant_a, sized_host, image, tiny_flavor):
    # given: a host with room for two tiny instances (2 vCPUs, no overcommit)
    host = sized_host(cpus=2, memory_mb=4096)
    acting = actor(alice, tenant_a)
    # when: three are asked for; the first two are placed and claimed before the third fails
    with pytest.raises(Conflict) as refused:
        services.instances_create(
            actor=acting, request=request_for(image, tiny_flavor), count=3, idempotency_key="bulk-1"
        )
    # then: the transaction rolled back the two claims with everything else
    assert "room" in str(refused.value)
    nothing_made(host)
    # and the room is really there again: two fit, with the same key now
    made = services.instances_create(
        actor=acting, request=request_for(image, tiny_flavor), count=2, idempotency_key="bulk-1"
    )
    assert [i.name for i in made] == ["web-1", "web-2"]
    host.refresh_from_db()
    assert host.vcpus_used == 2


@pytest.mark.django_db(transaction=True)
def test_it_makes_none_when_the_addresses_run_out(alice, tenant_a, host, image, tiny_flavor):
    # given: a host with room for many, but only two addresses left in its pool
    pool = IpPool.objects.get(host=host)
    IpPool.objects.filter(pk=pool.pk).update(last=str(ipaddress.ip_address(pool.first) + 1))
    # when
    with pytest.raises(Conflict) as refused:
        services.instances_create(actor=actor(alice, tenant_a), request=request_for(image, tiny_flavor), count=3)
    # then
    assert "no free IP address" in str(refused.value)
    nothing_made(host)


@pytest.mark.django_db(transaction=True)
def test_it_spreads_a_bulk_create_over_hosts_and_fills_them(alice, tenant_a, sized_host, image, tiny_flavor):
    # given: two hosts with room for two each
    hosts = [sized_host(cpus=2, memory_mb=4096) for _ in range(2)]
    # when
    made = services.instances_create(actor=actor(alice, tenant_a), request=request_for(image, tiny_flavor), count=4)
    # then: each instance went where the scheduler put it, two per host
    assert sorted(str(i.host_id) for i in made) == sorted([str(h.pk) for h in hosts] * 2)
    for host in hosts:
        host.refresh_from_db()
        assert host.vcpus_used == 2


@pytest.mark.django_db(transaction=True)
def test_it_lets_one_of_two_racing_bulk_creates_through_when_only_one_fits(
    concurrently, make_tenant, sized_host, image, tiny_flavor
):
    # given: a host with room for four, and two tenants asking for three each at once
    host = sized_host(cpus=4, memory_mb=4096)
    calls = []
    for _ in range(2):
        owner, tenant = make_tenant()
        acting = actor(owner, tenant)
        calls.append(
            lambda acting=acting: services.instances_create(
                actor=acting, request=request_for(image, tiny_flavor), count=3
            )
        )
    # when
    results = concurrently(calls)
    # then: one got all three, the other none
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "list"]
    assert Instance.objects.count() == IpAllocation.objects.count() == 3
    assert len(set(Instance.objects.values_list("tenant_id", flat=True))) == 1
    host.refresh_from_db()
    assert host.vcpus_used == 3


@pytest.mark.django_db(transaction=True)
def test_it_returns_the_same_instances_for_a_replayed_key(queued, alice, tenant_a, host, image, flavor):
    acting = actor(alice, tenant_a)
    first = services.instances_create(
        actor=acting, request=request_for(image, flavor), count=3, idempotency_key="bulk-1"
    )
    again = services.instances_create(
        actor=acting, request=request_for(image, flavor), count=3, idempotency_key="bulk-1"
    )
    assert [i.pk for i in again] == [i.pk for i in first]
    assert Instance.objects.count() == 3
    assert InstanceAction.objects.filter(action="create").count() == 3
    assert queued(host.queue) == 3


def test_it_refuses_a_key_replayed_with_another_count_or_as_a_single_create(alice, tenant_a, host, image, flavor):
    acting = actor(alice, tenant_a)
    services.instances_create(actor=acting, request=request_for(image, flavor), count=2, idempotency_key="bulk-1")
    with pytest.raises(Conflict):
        services.instances_create(actor=acting, request=request_for(image, flavor), count=3, idempotency_key="bulk-1")
    with pytest.raises(Conflict):
        services.instance_create(actor=acting, request=request_for(image, flavor), idempotency_key="bulk-1")
    assert Instance.objects.count() == 2


def test_it_makes_up_a_password_for_each_instance(alice, tenant_a, host, image, flavor):
    made = services.instances_create(
        actor=actor(alice, tenant_a), request=request_for(image, flavor, generate_password=True), count=3
    )
    passwords = [i.generated_password for i in made]
    assert len(set(passwords)) == 3
    assert len({i.password_hash for i in Instance.objects.all()}) == 3
