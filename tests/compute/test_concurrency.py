"""Many creates at once, at the edge of a quota, of a host's capacity and of an IP pool.

Each request runs in its own thread on its own PostgreSQL connection, released together, so
the row locks and conditional updates in services and scheduler are what keeps the limits.
The build tasks are queued to this run's Redis namespace and never run here.
"""

import ipaddress

import pytest
from django.db.models import Sum

from compute import services
from compute.models import Flavor, Host, Instance, IpAllocation, IpPool
from compute.sizing import Size
from tenants.models import Quota
from tests.conftest import actor, client_for

pytestmark = pytest.mark.django_db(transaction=True)


def create_call(user, image, flavor, name):
    client = client_for(user)  # built before the start line; used only in its thread
    body = {"name": name, "image": str(image.pk), "flavor": str(flavor.pk)}
    return lambda: client.post("/api/v1/instances", body, format="json")


def statuses(responses) -> list[int]:
    assert all(hasattr(r, "status_code") for r in responses), [r for r in responses if not hasattr(r, "status_code")]
    return sorted(r.status_code for r in responses)


def assert_host_matches_its_instances(host: Host) -> Host:
    host.refresh_from_db()
    live = (
        Instance.objects.filter(host=host)
        .exclude(state="deleted")
        .aggregate(vcpus=Sum("vcpus"), memory_mb=Sum("memory_mb"), disk_gb=Sum("disk_gb"))
    )
    assert (host.vcpus_used, host.memory_mb_used, host.disk_gb_used) == (
        live["vcpus"] or 0,
        live["memory_mb"] or 0,
        live["disk_gb"] or 0,
    )
    capacity = host.capacity()
    assert host.vcpus_used <= capacity["vcpus"]
    assert host.memory_mb_used <= capacity["memory_mb"]
    assert host.disk_gb_used <= capacity["disk_gb"]
    return host


def test_it_lets_exactly_the_instance_quota_through(concurrently, queued, alice, tenant_a, host, image, tiny_flavor):
    # given: room for 5 instances in the quota, far more on the host
    Quota.objects.filter(tenant=tenant_a).update(instances=5)
    # when: 12 creates at once
    responses = concurrently([create_call(alice, image, tiny_flavor, f"vm-{n}") for n in range(12)])
    # then: 5 accepted, 7 refused naming the limit
    assert statuses(responses) == [202] * 5 + [403] * 7
    for refused in (r for r in responses if r.status_code == 403):
        body = refused.json()
        assert body["code"] == "quota_exceeded"
        assert "Quota exceeded for instances" in body["detail"] and "limit 5" in body["detail"]
    accepted = {r.json()["id"] for r in responses if r.status_code == 202}
    assert set(map(str, Instance.objects.filter(tenant=tenant_a).values_list("id", flat=True))) == accepted
    assert IpAllocation.objects.count() == 5
    assert assert_host_matches_its_instances(host).vcpus_used == 5
    assert queued(host.queue) == 5  # one build queued per instance, none for the refused


def test_it_lets_exactly_the_vcpu_quota_through(concurrently, alice, tenant_a, host, image):
    # given: 7 vCPUs of quota and a 2-vCPU flavor: 3 fit, a 4th would need 8
    Quota.objects.filter(tenant=tenant_a).update(vcpus=7)
    flavor = Flavor.objects.create(name="c2", vcpus=2, memory_mb=256, disk_gb=1)
    # when
    responses = concurrently([create_call(alice, image, flavor, f"vm-{n}") for n in range(10)])
    # then
    assert statuses(responses) == [202] * 3 + [403] * 7
    for refused in (r for r in responses if r.status_code == 403):
        assert refused.json()["detail"] == "Quota exceeded for vcpus: 6 in use + 2 requested > limit 7."
    assert Instance.objects.filter(tenant=tenant_a).aggregate(v=Sum("vcpus"))["v"] == 6


def test_it_keeps_each_tenants_quota_when_tenants_race_each_other(concurrently, make_tenant, host, image, tiny_flavor):
    tenants = [make_tenant(instances=2) for _ in range(4)]
    calls = [create_call(owner, image, tiny_flavor, f"vm-{n}") for owner, _tenant in tenants for n in range(4)]
    responses = concurrently(calls)
    assert statuses(responses) == [202] * 8 + [403] * 8
    for _owner, tenant in tenants:
        assert Instance.objects.filter(tenant=tenant).count() == 2


@pytest.mark.parametrize(
    ("flavor_size", "fits"),
    [
        pytest.param((1, 512), 3, id="vcpu-bound"),  # 3 vCPUs after 1.5x overcommit; memory for 4
        pytest.param((1, 768), 2, id="memory-bound"),  # 2048 MiB holds two of 768
    ],
)
def test_it_never_claims_past_a_hosts_capacity(concurrently, make_tenant, sized_host, image, flavor_size, fits):
    # given: one small host, and one tenant per request so quota locks serialize nothing
    host = sized_host(cpus=2, memory_mb=2048, cpu_ratio="1.50")
    assert host.capacity()["vcpus"] == 3
    vcpus, memory_mb = flavor_size
    flavor = Flavor.objects.create(name="edge", vcpus=vcpus, memory_mb=memory_mb, disk_gb=1)
    owners = [make_tenant()[0] for _ in range(12)]
    # when
    responses = concurrently([create_call(owner, image, flavor, "vm") for owner in owners])
    # then: exactly what fits is accepted, the rest hear that no host has room
    assert statuses(responses) == [202] * fits + [409] * (12 - fits)
    for refused in (r for r in responses if r.status_code == 409):
        assert refused.json()["detail"].startswith("No host has room")
    host = assert_host_matches_its_instances(host)
    assert (host.vcpus_used, host.memory_mb_used) == (fits * vcpus, fits * memory_mb)
    assert Instance.objects.count() == IpAllocation.objects.count() == fits


def test_it_fills_several_small_hosts_exactly(concurrently, make_tenant, sized_host, image):
    hosts = [sized_host(cpus=2, memory_mb=4096, cpu_ratio="1.50") for _ in range(2)]
    flavor = Flavor.objects.create(name="edge", vcpus=1, memory_mb=256, disk_gb=1)
    owners = [make_tenant()[0] for _ in range(10)]
    responses = concurrently([create_call(owner, image, flavor, "vm") for owner in owners])
    assert statuses(responses) == [202] * 6 + [409] * 4
    for host in hosts:
        assert assert_host_matches_its_instances(host).vcpus_used == 3


def test_it_never_gives_two_instances_one_address(concurrently, make_tenant, host, image, tiny_flavor):
    # given: ten tenants creating two instances each on the one host, through the service
    size = Size.of_flavor(tiny_flavor)
    calls = []
    for _ in range(10):
        owner, tenant = make_tenant()
        acting = actor(owner, tenant)
        for n in range(2):
            request = services.CreateRequest(
                name=f"vm-{n}", image_id=str(image.pk), size=size, flavor_id=str(tiny_flavor.pk)
            )
            calls.append(lambda acting=acting, request=request: services.instance_create(actor=acting, request=request))
    # when
    results = concurrently(calls)
    # then: twenty instances, twenty different addresses and MACs, all inside the pool
    assert all(isinstance(r, Instance) for r in results), [r for r in results if not isinstance(r, Instance)]
    addresses = [r.ip_address for r in results]
    assert len(set(addresses)) == 20
    assert len({r.mac_address for r in results}) == 20
    pool = IpPool.objects.get(host=host)
    first, last = ipaddress.ip_address(pool.first), ipaddress.ip_address(pool.last)
    assert all(first <= ipaddress.ip_address(a) <= last and a != pool.gateway for a in addresses)
    stored = dict(IpAllocation.objects.values_list("instance_id", "address"))
    assert {str(k): v for k, v in stored.items()} == {str(r.pk): r.ip_address for r in results}
    assert sorted(Instance.objects.values_list("ip_address", flat=True)) == sorted(addresses)
    assert assert_host_matches_its_instances(host).vcpus_used == 20


def test_it_gives_a_name_to_one_of_many_concurrent_creates(concurrently, alice, tenant_a, host, image, tiny_flavor):
    responses = concurrently([create_call(alice, image, tiny_flavor, "web") for _ in range(6)])
    assert statuses(responses) == [202] + [400] * 5
    for refused in (r for r in responses if r.status_code == 400):
        assert list(refused.json()["fields"]) == ["name"]
    assert Instance.objects.count() == IpAllocation.objects.count() == 1


def test_it_hands_out_the_last_addresses_of_a_pool_once(concurrently, make_tenant, host, image, tiny_flavor):
    # given: a pool cut down to five addresses, .10 to .14
    pool = IpPool.objects.get(host=host)
    network = ipaddress.ip_network(pool.cidr)
    IpPool.objects.filter(pk=pool.pk).update(first=str(network[10]), last=str(network[14]))
    owners = [make_tenant()[0] for _ in range(8)]
    # when
    responses = concurrently([create_call(owner, image, tiny_flavor, "vm") for owner in owners])
    # then: five get an address each, three are told there is none, and nothing is half-made
    assert statuses(responses) == [202] * 5 + [409] * 3
    for refused in (r for r in responses if r.status_code == 409):
        assert refused.json()["detail"] == f"Host {host.name} has no free IP address."
    addresses = sorted(r.json()["ip_address"] for r in responses if r.status_code == 202)
    assert addresses == sorted(str(network[n]) for n in range(10, 15))
    assert Instance.objects.count() == 5
    assert assert_host_matches_its_instances(host).vcpus_used == 5


def test_it_places_on_the_next_host_when_the_best_has_no_free_address(
    concurrently, make_tenant, simulated_host, image, tiny_flavor
):
    # given: the roomiest host (spread picks it first) has a pool of two addresses; another
    # host has room and addresses
    roomy, other = simulated_host(memory_mb=65536), simulated_host(memory_mb=16384)
    pool = IpPool.objects.get(host=roomy)
    network = ipaddress.ip_network(pool.cidr)
    IpPool.objects.filter(pk=pool.pk).update(first=str(network[10]), last=str(network[11]))
    owners = [make_tenant()[0] for _ in range(5)]
    # when
    responses = concurrently([create_call(owner, image, tiny_flavor, "vm") for owner in owners])
    # then: two on the roomy host, three on the other, and no claim left on the roomy one
    assert statuses(responses) == [202] * 5
    placed = sorted(Instance.objects.values_list("host__name", flat=True))
    assert placed == sorted([roomy.name] * 2 + [other.name] * 3)
    assert assert_host_matches_its_instances(roomy).vcpus_used == 2
    assert assert_host_matches_its_instances(other).vcpus_used == 3


def test_it_passes_over_a_host_without_an_address_pool(alice, tenant_a, simulated_host, image, tiny_flavor):
    # given: the roomiest host has no pool at all (made by hand), another has one
    bare, other = simulated_host(memory_mb=65536), simulated_host(memory_mb=16384)
    IpPool.objects.filter(host=bare).delete()
    # when
    response = create_call(alice, image, tiny_flavor, "vm")()
    # then
    assert response.status_code == 202, response.json()
    assert Instance.objects.get().host == other
    assert assert_host_matches_its_instances(bare).vcpus_used == 0


def test_it_counts_resizes_in_flight_against_the_quota(concurrently, alice, tenant_a, host, image, tiny_flavor):
    # given: two 1-vCPU instances and a quota of 4 vCPUs; growing both to 3 would need 6
    Quota.objects.filter(tenant=tenant_a).update(vcpus=4)
    ids = [create_call(alice, image, tiny_flavor, f"vm-{n}")().json()["id"] for n in range(2)]
    Instance.objects.filter(pk__in=ids).update(state="running")
    bigger = {"vcpus": 3, "memory_mb": 128, "disk_gb": 1, "bandwidth_mbit": 10, "traffic_gb": 10}

    def resize(instance_id):
        client = client_for(alice)
        return lambda: client.post(f"/api/v1/instances/{instance_id}/resize", bigger, format="json")

    # when: both resized at once (their tasks have not run: the new sizes are only promised)
    responses = concurrently([resize(instance_id) for instance_id in ids])
    # then: one fits the quota, the other is refused naming vCPUs
    assert statuses(responses) == [202, 403]
    refused = next(r for r in responses if r.status_code == 403)
    assert refused.json()["detail"] == "Quota exceeded for vcpus: 4 in use + 2 requested > limit 4."
    # and a create is refused too, while the promised size is pending
    response = create_call(alice, image, tiny_flavor, "vm-3")()
    assert response.status_code == 403
    assert response.json()["detail"].startswith("Quota exceeded for vcpus: 4 in use")
