"""Migration from the Django admin: the instance action with its target page, refusals shown as
messages, the migration's steps on the instance's page, and drain / undrain of hosts."""

from __future__ import annotations

import pytest
from celery import current_app
from django.test import Client
from django.urls import reverse

from compute import services
from compute.models import Host, Instance
from compute.sizing import Size
from tests.compute.hypervisor import holdings
from tests.conftest import actor, make_user

CHANGELIST = "admin:compute_instance_changelist"


@pytest.fixture
def superuser(db):
    user = make_user("root@example.com", staff=True)
    user.is_superuser = True
    user.save(update_fields=["is_superuser"])
    return user


@pytest.fixture
def admin_client(superuser) -> Client:
    client = Client()
    client.force_login(superuser)
    return client


@pytest.fixture
def two_hosts(simulated_host):
    return simulated_host(), simulated_host()


def build(alice, tenant_a, image, flavor, name: str, *, on: Host, other: Host, stop: bool = True) -> Instance:
    """An instance built (in this process) on `on`, stopped unless asked otherwise."""
    Host.objects.filter(pk=other.pk).update(status=Host.Status.DISABLED)
    request = services.CreateRequest(
        name=name, image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=str(flavor.pk)
    )
    instance = services.instance_create(actor=actor(alice, tenant_a), request=request)
    if stop:
        services.instance_stop(actor=actor(alice, tenant_a), instance=Instance.objects.get(pk=instance.pk))
    Host.objects.filter(pk=other.pk).update(status=Host.Status.UP)
    instance = Instance.objects.get(pk=instance.pk)
    assert instance.host_id == on.pk
    return instance


@pytest.fixture
def stopped(eager, alice, tenant_a, two_hosts, image, flavor) -> Instance:
    first, second = two_hosts
    return build(alice, tenant_a, image, flavor, "web-1", on=first, other=second)


# The admin capitalises each message's first letter (Web-1: ...).
def act(client: Client, action: str, ids, **data):
    return client.post(
        reverse(CHANGELIST), {"action": action, "_selected_action": [str(i) for i in ids], **data}, follow=True
    )


def test_it_migrates_from_the_admin_to_the_host_picked(admin_client, stopped, two_hosts):
    first, second = two_hosts

    # when: the operator picks the action, then the target on its page
    page = act(admin_client, "migrate", [stopped.pk]).content.decode()
    assert 'name="host"' in page and second.name in page and "Let the scheduler pick" in page
    assert "cold: its disk is copied while it is stopped" in page
    done = act(admin_client, "migrate", [stopped.pk], host=str(second.pk), apply="Migrate")

    # then: it moved (the steps ran in this process), and the admin says so
    assert done.status_code == 200 and "Web-1: migration started." in done.content.decode()
    moved = Instance.objects.get(pk=stopped.pk)
    assert (moved.state, moved.host_id) == ("stopped", second.pk)
    assert holdings(second, moved).domains == [f"inst-{moved.pk}"]

    # and: its admin page shows the migration's steps, each done
    change = admin_client.get(reverse("admin:compute_instance_change", args=[moved.pk])).content.decode()
    assert 'id="migration-progress" data-status="requested"' in change
    assert f"to host {second.name}" in change and "step 8 of 8" in change
    for name in ("export", "import", "seed", "dhcp", "firewall", "define", "switch", "cleanup"):
        assert f'data-step="{name}" data-status="done"' in change
    assert 'http-equiv="refresh"' not in change


def test_it_lets_the_scheduler_pick_from_the_admin(admin_client, stopped, two_hosts):
    response = act(admin_client, "migrate", [stopped.pk], host="", apply="Migrate")

    assert "Web-1: migration started." in response.content.decode()
    assert Instance.objects.get(pk=stopped.pk).host_id == two_hosts[1].pk


def test_it_shows_refusals_as_messages(admin_client, alice, tenant_a, stopped, two_hosts, image, flavor):
    first, second = two_hosts
    running = build(alice, tenant_a, image, flavor, "web-2", on=first, other=second, stop=False)

    # when: the stopped one is sent to the host it is on, the running one anywhere (no segment)
    same = act(admin_client, "migrate", [stopped.pk], host=str(first.pk), apply="Migrate")
    live = act(admin_client, "migrate", [running.pk], host="", apply="Migrate")

    # then: each refusal is a message on the list, and nothing moved
    assert same.status_code == 200 and "Web-1: The instance is on this host already." in same.content.decode()
    assert live.status_code == 200 and "Web-2: A running instance moves only between hosts of one segment" in (
        live.content.decode()
    )
    assert set(Instance.objects.values_list("host_id", flat=True)) == {first.pk}
    # a host that is not up is not offered; sent anyway, the page asks again
    Host.objects.filter(pk=second.pk).update(status=Host.Status.DISABLED)
    again = act(admin_client, "migrate", [stopped.pk], host=str(second.pk), apply="Migrate").content.decode()
    assert 'name="host"' in again and "Select a valid choice" in again
    assert Instance.objects.get(pk=stopped.pk).state == "stopped"


def test_it_shows_a_migration_in_flight(admin_client, stopped, two_hosts):
    # given: a migration accepted, its task not run yet (no worker serves the host's queue)
    current_app.conf.task_always_eager = False
    try:
        act(admin_client, "migrate", [stopped.pk], host=str(two_hosts[1].pk), apply="Migrate")
    finally:
        current_app.conf.task_always_eager = True
    assert Instance.objects.get(pk=stopped.pk).state == "migrating"

    change = admin_client.get(reverse("admin:compute_instance_change", args=[stopped.pk])).content.decode()

    assert "No step has run yet." in change and "step 0 of 1" in change
    assert 'http-equiv="refresh"' in change


def test_it_drains_and_undrains_hosts_from_the_admin(admin_client, stopped, two_hosts):
    first, second = two_hosts
    hosts = reverse("admin:compute_host_changelist")

    drained = admin_client.post(
        hosts, {"action": "drain", "_selected_action": [str(first.pk)]}, follow=True
    ).content.decode()

    assert f"{first.name.capitalize()}: in maintenance; moving 1: web-1." in drained
    first.refresh_from_db()
    assert first.status == Host.Status.DISABLED
    assert Instance.objects.get(pk=stopped.pk).host_id == second.pk

    back = admin_client.post(hosts, {"action": "undrain", "_selected_action": [str(first.pk)]}, follow=True)

    assert f"{first.name.capitalize()}: back in service." in back.content.decode()
    first.refresh_from_db()
    assert first.status == Host.Status.UP


def test_it_keeps_the_admin_from_tenants(alice, stopped):
    client = Client()
    client.force_login(alice)

    response = client.post(reverse(CHANGELIST), {"action": "migrate", "_selected_action": [str(stopped.pk)]})

    assert response.status_code == 302 and "/login/" in response["Location"]
    assert Instance.objects.get(pk=stopped.pk).state == "stopped"
