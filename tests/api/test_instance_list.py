"""The instance list: numbered pages and keyset (`?cursor=`) pages show the same rows, in the
same shape as the instance's own page."""

from __future__ import annotations

import base64
import itertools
import uuid
from datetime import timedelta

import pytest
from django.core import signing
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from compute.models import Instance, InstanceAction, InstanceState
from compute.services import mac_for
from compute.transitions import PROVISION_STEPS
from tests.conftest import client_for, token_for

DETAIL_ONLY = {"user_data", "actions", "security_groups"}
_moments = itertools.count()


def make(tenant, host, image, flavor, count: int, *, state=InstanceState.RUNNING, custom=False) -> list[Instance]:
    now = timezone.now()
    rows = []
    for n in range(count):
        pk = uuid.uuid4()
        rows.append(
            Instance(
                id=pk,
                tenant=tenant,
                name=f"{state}-{n}-{pk.hex[:6]}",
                image=image,
                flavor=None if custom else flavor,
                vcpus=2 if custom else flavor.vcpus,
                memory_mb=1536 if custom else flavor.memory_mb,
                disk_gb=7 if custom else flavor.disk_gb,
                bandwidth_mbit=100,
                traffic_gb=50,
                sla_percent=flavor.sla_percent,
                host=host,
                state=state,
                ip_address=f"10.{n // 250 % 250}.{next(_moments) % 250}.{n % 250 + 1}",
                mac_address=mac_for(pk),
                # Distinct times, the last made the newest, so the expected order is known.
                created_at=now - timedelta(days=1) + timedelta(milliseconds=next(_moments)),
                launched_at=None if state in (InstanceState.BUILDING, InstanceState.ERROR) else now,
                error_step="define" if state == InstanceState.ERROR else "",
                error_message="no capacity" if state == InstanceState.ERROR else "",
            )
        )
    return Instance.objects.bulk_create(rows)


def walk(client, params: dict) -> list[dict]:
    """Every page from `?cursor=` on, by the `next` links."""
    response = client.get("/api/v1/instances", {"cursor": "", **params})
    pages = []
    while True:
        assert response.status_code == 200, response.json()
        body = response.json()
        assert "count" not in body
        pages.append(body)
        if not body["next"]:
            return pages
        response = client.get(body["next"])


@pytest.fixture
def client(alice, tenant_a):
    return client_for(token=token_for(alice, tenant_a))


def test_it_walks_every_live_instance_once_newest_first_with_a_cursor(client, tenant_a, tenant_b, host, image, flavor):
    # given: 120 of ours, some deleted, and another tenant's
    ours = make(tenant_a, host, image, flavor, 120)
    Instance.objects.filter(pk__in=[i.pk for i in ours[:7]]).update(state=InstanceState.DELETED)
    make(tenant_b, host, image, flavor, 30)
    # when
    pages = walk(client, {"page_size": 50})
    # then
    listed = [row["id"] for page in pages for row in page["results"]]
    expected = [str(i.pk) for i in sorted(ours[7:], key=lambda i: i.created_at, reverse=True)]
    assert listed == expected
    assert [len(page["results"]) for page in pages] == [50, 50, 13]


def test_it_goes_back_with_the_previous_link(client, tenant_a, host, image, flavor):
    make(tenant_a, host, image, flavor, 30)
    first = client.get("/api/v1/instances", {"cursor": "", "page_size": 10}).json()
    second = client.get(first["next"]).json()

    back = client.get(second["previous"]).json()

    assert [r["id"] for r in back["results"]] == [r["id"] for r in first["results"]]
    assert first["previous"] is None


def test_it_applies_the_filters_to_cursor_pages(client, tenant_a, host, image, flavor):
    make(tenant_a, host, image, flavor, 5)
    stopped = make(tenant_a, host, image, flavor, 3, state=InstanceState.STOPPED)

    pages = walk(client, {"state": "stopped"})

    assert {row["id"] for row in pages[0]["results"]} == {str(i.pk) for i in stopped}


def numbered(client, params: dict) -> list[str]:
    body = client.get("/api/v1/instances", {"page_size": 200, **params}).json()
    return [row["id"] for row in body["results"]]


def test_cursor_pages_and_numbered_pages_filter_alike(client, tenant_a, tenant_b, host, image, flavor):
    # given: names with LIKE's wildcards in them, two flavors, custom sizes, states, another tenant
    ours = make(tenant_a, host, image, flavor, 6) + make(tenant_a, host, image, flavor, 3, custom=True)
    Instance.objects.filter(pk=ours[0].pk).update(name="web_1")
    Instance.objects.filter(pk=ours[1].pk).update(name="WEBX1")  # "_" must not match any character
    Instance.objects.filter(pk=ours[2].pk).update(name="disk 100% full")
    Instance.objects.filter(pk=ours[3].pk).update(state=InstanceState.STOPPED)
    Instance.objects.filter(pk=ours[4].pk).update(state=InstanceState.DELETED)
    make(tenant_b, host, image, flavor, 4)
    cases = [
        {},
        {"name": "web_"},
        {"name": "0%"},
        {"name": "WEB"},
        {"state": "stopped"},
        {"state": "deleted"},
        {"flavor": str(flavor.pk)},
        {"image": str(image.pk), "state": "running"},
        {"flavor": str(uuid.uuid4())},
    ]
    for params in cases:
        # when
        by_cursor = [row["id"] for page in walk(client, {**params, "page_size": 2}) for row in page["results"]]
        # then: the same rows in the same order, whichever way they are paged
        assert by_cursor == numbered(client, params), params
    assert numbered(client, {"name": "web_"}) == [str(ours[0].pk)]
    assert numbered(client, {"name": "0%"}) == [str(ours[2].pk)]
    assert numbered(client, {"state": "deleted"}) == [str(ours[4].pk)]


def test_it_answers_a_signed_cursor_whose_position_is_no_timestamp_with_a_400(client, tenant_a, host, image, flavor):
    make(tenant_a, host, image, flavor, 3)
    forged = signing.Signer(salt="portal.api.cursor").sign(base64.b64encode(b"p=yesterday").decode())

    response = client.get("/api/v1/instances", {"cursor": forged})

    assert response.status_code == 400, response.content
    assert list(response.json()["fields"]) == ["cursor"]


@pytest.mark.parametrize("cursor", ["not-a-cursor", "cD0yMDI2", "\x00abc", "%00", "x" * 500])
def test_it_answers_a_bad_cursor_with_a_400_naming_it(client, tenant_a, host, image, flavor, cursor):
    make(tenant_a, host, image, flavor, 3)

    response = client.get("/api/v1/instances", {"cursor": cursor})

    assert response.status_code == 400, response.content
    assert "cursor" in response.json()["fields"]


def test_it_answers_cursor_pages_in_the_same_number_of_queries_for_any_size(client, tenant_a, host, image, flavor):
    # building ones newest, so every page holds some and reads their progress
    make(tenant_a, host, image, flavor, 150)
    building = make(tenant_a, host, image, flavor, 60, state=InstanceState.BUILDING)
    InstanceAction.objects.bulk_create(
        InstanceAction(instance=i, action="create", step=step, status=InstanceAction.Status.DONE)
        for i in building
        for step in PROVISION_STEPS[:2]
    )
    client.get("/api/v1/instances", {"cursor": ""})
    counts = set()
    for size in (5, 50, 200):
        with CaptureQueriesContext(connection) as queries:
            response = client.get("/api/v1/instances", {"cursor": "", "page_size": size})
        assert len(response.json()["results"]) == size
        counts.add(len(queries.captured_queries))
    assert len(counts) == 1, counts


def test_it_shows_each_instance_in_the_list_as_on_its_own_page(client, tenant_a, host, image, flavor):
    # given: every shape a row can take: flavor or custom size, building with progress, failed
    make(tenant_a, host, image, flavor, 1)
    make(tenant_a, host, image, flavor, 1, custom=True)
    make(tenant_a, host, image, flavor, 1, state=InstanceState.ERROR)
    (building,) = make(tenant_a, host, image, flavor, 1, state=InstanceState.BUILDING)
    InstanceAction.objects.bulk_create(
        InstanceAction(instance=building, action="create", step=step, status=InstanceAction.Status.DONE)
        for step in PROVISION_STEPS[:3]
    )
    # when
    numbered = client.get("/api/v1/instances").json()["results"]
    keyset = walk(client, {})[0]["results"]
    # then
    assert numbered == keyset
    assert len(numbered) == 4
    for row in numbered:
        detail = client.get(f"/api/v1/instances/{row['id']}").json()
        assert {k: v for k, v in detail.items() if k not in DETAIL_ONLY} == row
    shown = {row["state"]: row for row in numbered}
    assert 0 < shown["building"]["progress"] < 100
    assert shown["error"]["error"] == {"step": "define", "message": "no capacity"}
    assert {row["flavor"] is None for row in numbered} == {True, False}
