"""The instance pages as a browser sees them: dashboard, create, one instance, its actions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from compute import operations
from compute.models import Instance, InstanceAction, InstanceState
from tenants import services as tenant_services
from tenants.models import Quota
from tests.conftest import actor
from tests.ui.conftest import browser_client, post

pytestmark = pytest.mark.django_db

CUSTOM = {"size_mode": "custom", "vcpus": 2, "memory_mb": 1024, "disk_gb": 5, "bandwidth_mbit": 50, "traffic_gb": 100}


def create_form(image, flavor=None, **fields) -> dict:
    data = {"name": "web-1", "image": str(image.pk), "user_data": ""}
    data.update({"size_mode": "flavor", "flavor": str(flavor.pk)} if flavor else CUSTOM)
    return {**data, **fields}


# -- the dashboard -----------------------------------------------------------------------------


def test_it_lists_the_tenants_instances_with_state_address_and_cost(alice, charlie, tenant_b, make_instance):
    mine = make_instance("web-1")
    client = browser_client(alice)

    page = client.get("/instances/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "web-1" in html and mine.ip_address in html and 'data-state="running"' in html
    assert f'data-instance="{mine.pk}"' in html
    assert "web-1" not in browser_client(charlie).get("/instances/").content.decode()


def test_it_sends_only_the_rows_to_htmx_polling(alice, make_instance):
    make_instance("web-1", built=False)

    rows = browser_client(alice).get("/instances/", HTTP_HX_REQUEST="true")

    html = rows.content.decode()
    assert html.lstrip().startswith("<tbody") and "<nav" not in html
    assert 'hx-trigger="every 2s"' in html  # something is building: poll faster


def test_it_lists_instances_in_a_constant_number_of_queries(alice, make_instance):
    def ours(captured) -> list[str]:
        # Billing's cost figures are billing's queries (its rating reads prices per instance today).
        return [q["sql"] for q in captured.captured_queries if '"billing_' not in q["sql"]]

    client = browser_client(alice)
    make_instance("a")
    client.get("/instances/")  # warm up the session and the price list
    with CaptureQueriesContext(connection) as one:
        client.get("/instances/")
    make_instance("b")
    make_instance("c")
    with CaptureQueriesContext(connection) as three:
        client.get("/instances/")

    assert len(ours(three)) == len(ours(one))


def test_it_pages_a_long_list_of_instances(alice, tenant_a, host, image, flavor):
    # given: 60 live instances (rows only: the page reads, it builds nothing)
    rows = [
        Instance(
            tenant=tenant_a,
            name=f"vm-{n:02d}",
            image=image,
            flavor=flavor,
            vcpus=1,
            memory_mb=512,
            disk_gb=10,
            bandwidth_mbit=100,
            traffic_gb=100,
            sla_percent=flavor.sla_percent,
            host=host,
            state=InstanceState.STOPPED,
            ip_address=f"10.20.0.{n + 1}",
            mac_address=f"02:00:00:00:01:{n:02x}",
            created_at=timezone.now() - timedelta(minutes=60 - n),
        )
        for n in range(60)
    ]
    Instance.objects.bulk_create(rows)
    client = browser_client(alice)
    # when
    first, second = client.get("/instances/"), client.get("/instances/", {"page": 2})
    polled = client.get("/instances/", {"page": 2}, HTTP_HX_REQUEST="true").content.decode()
    # then: the newest 50, then the other 10; the poll keeps its page
    assert first.content.decode().count("data-instance=") == 50
    assert ">vm-59<" in first.content.decode() and ">vm-09<" not in first.content.decode()
    assert second.content.decode().count("data-instance=") == 10
    assert "51 to 60 of 60" in second.content.decode()
    assert 'hx-get="/instances/?page=2"' in polled and polled.count("data-instance=") == 10
    for junk in ("x", "-1", "999", "%00"):
        assert client.get("/instances/", {"page": junk}).status_code == 200


# -- create ------------------------------------------------------------------------------------


def test_it_creates_an_instance_of_a_flavor_and_shows_its_build(alice, tenant_a, host, image, flavor):
    client = browser_client(alice)
    assert client.get("/instances/new").status_code == 200

    response = post(client, "/instances/new", create_form(image, flavor))

    instance = Instance.objects.get(tenant=tenant_a, name="web-1")
    assert response.status_code == 302 and response["Location"] == f"/instances/{instance.pk}"
    assert instance.flavor == flavor and instance.state == InstanceState.BUILDING
    page = client.get(response["Location"]).content.decode()
    assert instance.ip_address in page and "is being built" in page
    assert 'data-step="image"' in page and 'hx-trigger="every 1s"' in page


def test_it_creates_a_custom_size_inside_the_operators_limits(alice, tenant_a, host, image):
    response = post(browser_client(alice), "/instances/new", create_form(image, ssh_keys=[]))

    assert response.status_code == 302
    instance = Instance.objects.get(tenant=tenant_a, name="web-1")
    assert (instance.vcpus, instance.memory_mb, instance.disk_gb, instance.flavor) == (2, 1024, 5, None)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"vcpus": 999}, "vcpus", "less than or equal to 16"),
        ({"memory_mb": 64}, "memory_mb", "greater than or equal to 128"),
        ({"name": ""}, "name", "This field is required"),
        ({"size_mode": "flavor", "flavor": ""}, "flavor", "Choose a flavor"),
        ({"user_data": "x" * (64 * 1024 + 1)}, "user_data", "over 64 KiB"),
    ],
)
def test_it_shows_input_errors_next_to_their_field(alice, tenant_a, host, image, fields, field, message):
    response = post(browser_client(alice), "/instances/new", create_form(image, **fields))

    assert response.status_code == 400
    html = response.content.decode()
    assert f'id="id_{field}-errors"' in html
    assert message in html.split(f'id="id_{field}-errors"')[1].split("</div>")[0]
    assert not Instance.objects.filter(tenant=tenant_a).exists()


def test_it_shows_why_the_service_refused_and_never_a_500(alice, tenant_a, host, image, flavor, make_instance):
    client = browser_client(alice)
    make_instance("web-1")

    # a name in use: the service names the field
    taken = post(client, "/instances/new", create_form(image, flavor))
    assert taken.status_code == 400
    assert "already exists" in taken.content.decode().split('id="id_name-errors"')[1]

    # over the instance quota: a sentence above the form, in a customer's words
    Quota.objects.filter(tenant=tenant_a).update(instances=1)
    over = post(client, "/instances/new", create_form(image, flavor, name="web-2"))
    assert over.status_code == 409
    assert "Your tenant already has 1 of its 1 instances" in over.content.decode()
    assert "Quota exceeded" not in over.content.decode()

    # over the memory quota: next to the memory field, in GiB
    Quota.objects.filter(tenant=tenant_a).update(instances=10)
    big = post(client, "/instances/new", create_form(image, name="web-2", **{**CUSTOM, "memory_mb": 65536}))
    assert big.status_code == 409
    assert (
        "This needs 64 GiB of memory; your tenant has 39.5 GiB left of 40 GiB."
        in (big.content.decode().split('id="id_memory_mb-errors"')[1])
    )

    # no host with room
    Quota.objects.filter(tenant=tenant_a).update(instances=10, vcpus=1000, memory_mb=10**7)
    full = post(client, "/instances/new", create_form(image, name="web-3", **{**CUSTOM, "memory_mb": 65536}))
    assert full.status_code == 409 and 'role="alert"' in full.content.decode()

    # a suspended tenant
    tenant_services.tenant_set_suspended(actor=None, tenant=tenant_a, reason="Unpaid invoice.")
    suspended = post(client, "/instances/new", create_form(image, flavor, name="web-4"))
    assert suspended.status_code == 409 and "suspended" in suspended.content.decode()
    assert Instance.objects.filter(tenant=tenant_a).count() == 1


def test_it_prices_the_size_the_form_shows(alice, tenant_a, flavor):
    client = browser_client(alice)

    custom = client.get("/instances/new/price", CUSTOM).content.decode()
    chosen = client.get("/instances/new/price", {"size_mode": "flavor", "flavor": str(flavor.pk)}).content.decode()
    broken = client.get("/instances/new/price", {**CUSTOM, "vcpus": 10**6}).content.decode()

    assert 'data-summary="vcpus">2<' in custom and 'data-summary="memory_mb">1 GiB<' in custom
    assert 'data-summary="memory_mb">512 MiB<' in chosen
    assert "data-summary" not in broken and "data-price" in broken


# -- one instance ------------------------------------------------------------------------------


def test_it_follows_a_build_step_by_step_and_stops_polling_when_it_runs(alice, make_instance):
    instance = make_instance(built=False)
    InstanceAction.objects.create(instance=instance, action="create", step="image", status="done", duration_ms=5)
    InstanceAction.objects.create(instance=instance, action="create", step="disk", status="running")
    client = browser_client(alice)

    building = client.get(f"/instances/{instance.pk}/live", HTTP_HX_REQUEST="true").content.decode()

    assert 'data-step="image" data-status="done"' in building
    assert 'data-step="disk" data-status="running"' in building
    assert 'data-step="start" data-status="pending"' in building
    assert 'hx-trigger="every 1s"' in building and 'hx-swap-oob="true"' in building  # the log comes along

    operations.provision(instance.pk)
    running = client.get(f"/instances/{instance.pk}/live", HTTP_HX_REQUEST="true")
    html = running.content.decode()
    # a settled instance is still polled (a guest can power itself off), only slower, and an
    # unchanged fragment is a 304 without a body
    assert 'data-state="running"' in html and 'hx-trigger="every 2s"' in html and "data-step" not in html
    again = client.get(f"/instances/{instance.pk}/live", HTTP_HX_REQUEST="true", HTTP_IF_NONE_MATCH=running["ETag"])
    assert again.status_code == 304 and again.content == b""


def test_it_shows_a_failed_step_with_its_message(alice, make_instance):
    instance = make_instance(built=False)
    Instance.objects.filter(pk=instance.pk).update(state="error", error_step="dhcp", error_message="network gone")

    page = browser_client(alice).get(f"/instances/{instance.pk}").content.decode()

    assert "dhcp" in page and "network gone" in page


def test_it_runs_power_actions_and_says_why_one_is_refused(alice, make_instance):
    instance = make_instance()
    client = browser_client(alice)

    stopped = post(client, f"/instances/{instance.pk}/stop")
    again = post(client, f"/instances/{instance.pk}/stop", follow=True)

    assert stopped.status_code == 302 and Instance.objects.get(pk=instance.pk).state == InstanceState.STOPPING
    assert again.status_code == 200 and "Cannot stop an instance that is stopping" in again.content.decode()
    assert post(client, f"/instances/{instance.pk}/explode").status_code == 404


def test_it_deletes_only_after_confirmation(alice, make_instance):
    instance = make_instance()
    client = browser_client(alice)

    confirm = client.get(f"/instances/{instance.pk}/delete")
    assert confirm.status_code == 200 and "Yes, delete web-1" in confirm.content.decode()
    assert Instance.objects.get(pk=instance.pk).state == InstanceState.RUNNING

    response = post(client, f"/instances/{instance.pk}/delete")

    assert response.status_code == 302 and response["Location"] == "/instances/"
    assert Instance.objects.get(pk=instance.pk).state == InstanceState.DELETING


def test_it_resizes_rebuilds_and_snapshots_through_their_forms(alice, make_instance, image):
    instance = make_instance()
    client = browser_client(alice)
    for page in ("resize", "rebuild", "snapshot"):
        assert client.get(f"/instances/{instance.pk}/{page}").status_code == 200

    shrink = post(client, f"/instances/{instance.pk}/resize", {**CUSTOM, "disk_gb": 1})
    assert shrink.status_code == 400 and "Disks can only grow" in shrink.content.decode()

    grow = post(client, f"/instances/{instance.pk}/resize", {**CUSTOM, "disk_gb": 20})
    assert grow.status_code == 302
    assert Instance.objects.get(pk=instance.pk).state == InstanceState.RESIZING

    busy = post(client, f"/instances/{instance.pk}/snapshot", {"name": "snap"})
    assert busy.status_code == 400 and "Cannot snapshot an instance that is resizing" in busy.content.decode()

    operations.resize(instance.pk)
    assert post(client, f"/instances/{instance.pk}/snapshot", {"name": "snap"}).status_code == 302
    operations.snapshot(instance.pk)
    assert post(client, f"/instances/{instance.pk}/rebuild", {"image": str(image.pk)}).status_code == 302
    assert Instance.objects.get(pk=instance.pk).state == InstanceState.REBUILDING


def test_it_serves_chart_series(alice, make_instance):
    instance = make_instance()

    data = browser_client(alice).get(f"/instances/{instance.pk}/usage").json()

    assert set(data) == {"cpu", "rx_bytes", "tx_bytes", "disk_bytes"}
    assert all(isinstance(points, list) for points in data.values())


def test_it_shows_another_tenants_instance_to_nobody(charlie, tenant_b, make_instance):
    instance = make_instance()
    client = browser_client(charlie)
    base = f"/instances/{instance.pk}"

    for path in ["", "/live", "/usage", "/resize", "/rebuild", "/snapshot", "/delete", "/console"]:
        assert client.get(base + path).status_code == 404, path
    for path in ["/start", "/stop", "/reboot", "/delete", "/resize", "/rebuild", "/snapshot"]:
        assert post(client, base + path, {"name": "x"}).status_code == 404, path
    assert Instance.objects.get(pk=instance.pk).state == InstanceState.RUNNING


def test_it_lets_viewers_look_but_not_act(vera, tenant_a, make_instance, image, flavor):
    instance = make_instance()
    client = browser_client(vera)

    page = client.get(f"/instances/{instance.pk}").content.decode()
    assert "viewer" in page and f"/instances/{instance.pk}/stop" not in page

    for path, data in [
        ("/instances/new", create_form(image, flavor, name="v")),
        (f"/instances/{instance.pk}/stop", {}),
        (f"/instances/{instance.pk}/delete", {}),
        (f"/instances/{instance.pk}/resize", CUSTOM),
        (f"/instances/{instance.pk}/rebuild", {"image": str(image.pk)}),
        (f"/instances/{instance.pk}/snapshot", {"name": "s"}),
    ]:
        response = post(client, path, data)
        assert response.status_code == 403, path
        assert "needs the member role" in response.content.decode()
    assert Instance.objects.get(pk=instance.pk).state == InstanceState.RUNNING


def test_it_refuses_a_form_without_its_csrf_token(alice, make_instance):
    instance = make_instance()

    response = browser_client(alice).post(f"/instances/{instance.pk}/stop")

    assert response.status_code == 403
    assert Instance.objects.get(pk=instance.pk).state == InstanceState.RUNNING


def test_it_explains_why_the_console_is_not_there(alice, make_instance):
    instance = make_instance()  # the test driver gives no VNC display

    page = browser_client(alice).get(f"/instances/{instance.pk}/console")

    assert page.status_code == 409 and "no VNC display" in page.content.decode()


def test_it_uses_the_switched_tenant_everywhere(alice, tenant_a, make_instance):
    make_instance()
    other = tenant_services.tenant_create(name="Second", owner=alice)
    client = browser_client(alice)
    assert "Second" in client.get("/instances/").content.decode()  # the switcher lists it

    post(client, "/tenants/switch", {"tenant": str(other.pk), "next": "/instances/"})

    page = client.get("/instances/").content.decode()
    assert "of Second" in page and "web-1" not in page
    assert actor(alice, other).tenant == other


def test_it_says_on_the_instance_page_when_and_why_it_is_throttled(alice, make_instance):
    # given: an instance throttled for using up its traffic allowance
    instance = make_instance()
    Instance.objects.filter(pk=instance.pk).update(throttled=True, throttle_kbytes=125)

    page = browser_client(alice).get(f"/instances/{instance.pk}")

    html = page.content.decode()
    assert 'id="throttle-reason"' in html
    assert "traffic allowance is used up" in html and "next month" in html


# -- finding, renaming and tagging -------------------------------------------------------------


def test_it_searches_sorts_and_filters_by_tag(alice, make_instance):
    web, db = make_instance("web-1"), make_instance("db-1")
    client = browser_client(alice)
    assert post(client, f"/instances/{db.pk}/edit", {"name": "db-1", "tags": "prod, Database"}).status_code == 302

    def names(**params) -> list[str]:
        html = client.get("/instances/", params).content.decode()
        return [name for name in ("web-1", "db-1") if f">{name}<" in html]

    assert names(q="web") == ["web-1"]
    assert names(q=web.ip_address) == ["web-1"]
    assert names(tag="database") == ["db-1"]
    assert names(q="nothing") == []
    html = client.get("/instances/", {"sort": "name"}).content.decode()
    assert html.index(">db-1<") < html.index(">web-1<")
    html = client.get("/instances/", {"sort": "-name"}).content.decode()
    assert html.index(">web-1<") < html.index(">db-1<")
    assert client.get("/instances/", {"sort": "x", "q": "\x00"}).status_code == 200
    bad = post(client, f"/instances/{db.pk}/edit", {"name": "db-1", "tags": "no spaces!"})
    assert bad.status_code == 400 and "A tag is 1 to 32" in bad.content.decode()


def test_it_renames_in_the_page_and_the_api_refusing_a_name_in_use(alice, tenant_a, make_instance):
    web, db = make_instance("web-1"), make_instance("db-1")
    client = browser_client(alice)

    taken = post(client, f"/instances/{web.pk}/edit", {"name": "db-1", "tags": ""})
    assert taken.status_code == 400 and "already exists" in taken.content.decode()
    assert post(client, f"/instances/{web.pk}/edit", {"name": "web-2", "tags": ""}).status_code == 302
    assert Instance.objects.get(pk=web.pk).name == "web-2"

    api = client.patch(
        f"/api/v1/instances/{db.pk}",
        '{"name": "db-2"}',
        content_type="application/json",
        HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value,
    )
    assert api.status_code == 200 and api.json()["name"] == "db-2"
    clash = client.patch(
        f"/api/v1/instances/{db.pk}",
        '{"name": "web-2"}',
        content_type="application/json",
        HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value,
    )
    assert clash.status_code == 400 and "name" in clash.json()["fields"]


def test_it_asks_before_stopping(alice, make_instance):
    instance = make_instance()
    client = browser_client(alice)

    question = client.get(f"/instances/{instance.pk}/stop")

    assert question.status_code == 200 and "Yes, stop web-1" in question.content.decode()
    assert Instance.objects.get(pk=instance.pk).state == InstanceState.RUNNING
    assert client.get(f"/instances/{instance.pk}/reboot").status_code == 404
