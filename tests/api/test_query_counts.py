"""List endpoints answer in a fixed number of queries, whatever the page size (issue 7).

A test of query counts, not of time: each list is filled with more rows than the largest
page, then asked for pages of 5, 50 and 200; a query per row (a missing select_related, a
serializer field that reads a relation) would make the bigger pages cost more queries.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from compute.models import Image, Instance, InstanceAction, InstanceState
from compute.services import mac_for
from compute.transitions import PROVISION_STEPS
from tenants.models import ApiToken, Invitation, Membership, Role, SshKey, User

ROWS = 210  # more than the largest page (Pagination.max_page_size is 200)
PAGE_SIZES = (5, 50, 200)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_instances(alice, tenant_a, host, image, flavor) -> None:
    """Rows of every kind the list shows: built (with their step log), building, failed."""
    states = [InstanceState.RUNNING, InstanceState.BUILDING, InstanceState.STOPPED, InstanceState.ERROR]
    instances = []
    for n in range(ROWS):
        pk = uuid.uuid4()
        instances.append(
            Instance(
                id=pk,
                tenant=tenant_a,
                name=f"vm-{n}",
                image=image,
                flavor=flavor if n % 2 else None,
                vcpus=1,
                memory_mb=512,
                disk_gb=10,
                bandwidth_mbit=100,
                traffic_gb=100,
                sla_percent=flavor.sla_percent,
                host=host,
                state=states[n % len(states)],
                ip_address=f"10.9.{n // 250}.{n % 250 + 1}",
                mac_address=mac_for(pk),
                created_by=alice,
            )
        )
    Instance.objects.bulk_create(instances)
    InstanceAction.objects.bulk_create(
        InstanceAction(instance=instance, action="create", step=step, status=InstanceAction.Status.DONE, user=alice)
        for instance in instances
        for step in PROVISION_STEPS[:3]
    )


def make_members(alice, tenant_a, **_rows) -> None:
    users = User.objects.bulk_create(
        User(username=f"member{n}@example.com", email=f"member{n}@example.com") for n in range(ROWS)
    )
    Membership.objects.bulk_create(Membership(user=user, tenant=tenant_a, role=Role.MEMBER) for user in users)


def make_tokens(alice, tenant_a, **_rows) -> None:
    ApiToken.objects.bulk_create(
        ApiToken(tenant=tenant_a, user=alice, name=f"t{n}", prefix=f"{n:012x}", secret_hash=_hash(f"t{n}"))
        for n in range(ROWS)
    )


def make_ssh_keys(alice, tenant_a, **_rows) -> None:
    SshKey.objects.bulk_create(
        SshKey(
            tenant=tenant_a,
            created_by=alice,
            name=f"key{n}",
            public_key=f"ssh-ed25519 AAAA{n:040d} key{n}",
            fingerprint=f"SHA256:{_hash(str(n))[:43]}",
        )
        for n in range(ROWS)
    )


def make_invitations(alice, tenant_a, **_rows) -> None:
    expires = timezone.now() + timedelta(days=3)
    Invitation.objects.bulk_create(
        Invitation(
            tenant=tenant_a,
            email=f"guest{n}@example.com",
            role=Role.MEMBER,
            token_hash=_hash(f"inv{n}"),
            invited_by=alice,
            expires_at=expires,
        )
        for n in range(ROWS)
    )


def make_images(alice, tenant_a, **_rows) -> None:
    Image.objects.bulk_create(
        Image(name=f"golden-{n}", visibility=Image.Visibility.PRIVATE, tenant=tenant_a, size_bytes=512)
        for n in range(ROWS)
    )


LISTS = {
    "/api/v1/instances": make_instances,
    "/api/v1/members": make_members,
    "/api/v1/tokens": make_tokens,
    "/api/v1/ssh-keys": make_ssh_keys,
    "/api/v1/invitations": make_invitations,
    "/api/v1/images": make_images,
}


@pytest.mark.parametrize("url", list(LISTS))
def test_it_lists_in_the_same_number_of_queries_for_any_page_size(api, alice, tenant_a, host, image, flavor, url):
    # given: more rows than the largest page
    LISTS[url](alice=alice, tenant_a=tenant_a, host=host, image=image, flavor=flavor)
    client = api(alice)
    assert client.get(url).status_code == 200  # warm-up: per-process caches, the session
    # when
    counts = {}
    for size in PAGE_SIZES:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url, {"page_size": size})
        assert response.status_code == 200, response.json()
        assert len(response.json()["results"]) == size
        counts[size] = len(queries.captured_queries)
    # then
    assert len(set(counts.values())) == 1, f"queries per page size for {url}: {counts}"
