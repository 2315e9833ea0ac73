"""Idempotency-Key on instance create: a repeated request gets the first one's instance."""

import pytest

from compute.models import IdempotencyKey, Instance, InstanceAction, IpAllocation
from tenants.models import Quota
from tests.conftest import client_for


def body_for(image, flavor, name="web-1"):
    return {"name": name, "image": str(image.pk), "flavor": str(flavor.pk)}


def post(client, body, key):
    return client.post("/api/v1/instances", body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_it_returns_the_same_instance_for_the_same_key_and_body(api, alice, tenant_a, host, image, flavor):
    client = api(alice)
    # when: the same request twice, as a client retrying after a lost answer would
    first = post(client, body_for(image, flavor), "key-1")
    again = post(client, body_for(image, flavor), "key-1")
    # then
    assert first.status_code == again.status_code == 202, again.json()
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["ip_address"] == first.json()["ip_address"]
    assert Instance.objects.count() == 1
    assert IpAllocation.objects.count() == 1
    assert InstanceAction.objects.filter(action="create").count() == 1
    host.refresh_from_db()
    assert (host.vcpus_used, host.memory_mb_used, host.disk_gb_used) == (1, 512, 10)


def test_it_refuses_the_same_key_with_another_body(api, alice, tenant_a, host, image, flavor):
    client = api(alice)
    assert post(client, body_for(image, flavor), "key-1").status_code == 202
    response = post(client, body_for(image, flavor, name="web-2"), "key-1")
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert "Idempotency-Key was used with a different request" in response.json()["detail"]
    assert list(Instance.objects.values_list("name", flat=True)) == ["web-1"]


def test_it_makes_a_new_instance_for_a_new_key(api, alice, tenant_a, host, image, flavor):
    client = api(alice)
    first = post(client, body_for(image, flavor, "a"), "key-1")
    second = post(client, body_for(image, flavor, "b"), "key-2")
    assert first.json()["id"] != second.json()["id"]
    assert Instance.objects.count() == 2


def test_it_keeps_keys_apart_between_tenants(api, alice, tenant_a, charlie, tenant_b, host, image, flavor):
    mine = post(api(alice), body_for(image, flavor), "shared-key")
    theirs = post(api(charlie), body_for(image, flavor), "shared-key")
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["id"] != theirs.json()["id"]
    assert Instance.objects.get(pk=theirs.json()["id"]).tenant == tenant_b


def test_it_does_not_spend_a_key_on_a_refused_request(api, alice, tenant_a, host, image, flavor):
    # given: a create refused by the quota
    Quota.objects.filter(tenant=tenant_a).update(instances=0)
    client = api(alice)
    assert post(client, body_for(image, flavor), "key-1").status_code == 403
    assert not IdempotencyKey.objects.exists()
    # when: the client retries with the same key once the quota allows it
    Quota.objects.filter(tenant=tenant_a).update(instances=1)
    response = post(client, body_for(image, flavor), "key-1")
    # then: the retry is a create like any other
    assert response.status_code == 202
    assert IdempotencyKey.objects.get().instance_id == Instance.objects.get().pk


def test_it_refuses_an_overlong_key(api, alice, tenant_a, host, image, flavor):
    response = post(api(alice), body_for(image, flavor), "k" * 256)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["fields"]
    assert not Instance.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_it_makes_one_instance_for_concurrent_duplicates(concurrently, queued, alice, tenant_a, host, image, flavor):
    # given: eight clients sending the very same request with the same key at once
    clients = [client_for(alice) for _ in range(8)]
    calls = [lambda c=c: post(c, body_for(image, flavor), "race-key") for c in clients]
    # when
    responses = concurrently(calls)
    # then: every one of them is told about the same instance, and only one exists
    assert [getattr(r, "status_code", r) for r in responses] == [202] * 8
    assert len({r.json()["id"] for r in responses}) == 1
    assert Instance.objects.count() == 1
    assert IpAllocation.objects.count() == 1
    host.refresh_from_db()
    assert host.vcpus_used == 1
    assert queued(host.queue) == 1  # built once


@pytest.mark.django_db(transaction=True)
def test_it_lets_one_of_two_concurrent_bodies_win_a_key(concurrently, alice, tenant_a, host, image, flavor):
    # given: six requests with one key, half of them with another body
    names = [f"web-{n % 2}" for n in range(6)]
    clients = [client_for(alice) for _ in names]
    calls = [
        lambda c=c, name=name: post(c, body_for(image, flavor, name), "race-key")
        for c, name in zip(clients, names, strict=True)
    ]
    # when
    responses = concurrently(calls)
    # then: one body made the only instance; its twins get it, the others a conflict
    winner = Instance.objects.get()
    for name, response in zip(names, responses, strict=True):
        if name == winner.name:
            assert response.status_code == 202 and response.json()["id"] == str(winner.pk)
        else:
            assert response.status_code == 409
