"""The create page's "How many": N instances from one form, all or none, refusals by the field."""

from __future__ import annotations

import pytest

from compute.models import Instance, InstanceState
from tenants.models import Quota
from tests.ui.conftest import browser_client, post

pytestmark = pytest.mark.django_db


def create_form(image, flavor, **fields) -> dict:
    data = {"name": "web-{n}", "count": "3", "image": str(image.pk), "user_data": ""}
    return {**data, "size_mode": "flavor", "flavor": str(flavor.pk), **fields}


def errors_of(html: str, field: str) -> str:
    marker = f'id="id_{field}-errors"'
    assert marker in html, f"no errors shown for {field}"
    return html.split(marker)[1].split("</div>")[0]


def test_it_offers_how_many_with_the_pattern_hint(alice, tenant_a, host, image, flavor):
    html = browser_client(alice).get("/instances/new").content.decode()
    field = html.split('name="count"')[0].rsplit("<input", 1)[1] + html.split('name="count"')[1].split(">")[0]
    assert 'type="number"' in field and 'value="1"' in field and 'min="1"' in field and 'max="20"' in field
    assert "How many" in html and "web-{n} makes web-1, web-2" in html


def test_it_shows_how_many_in_chinese(alice, tenant_a, host, image, flavor):
    html = browser_client(alice).get("/instances/new", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "数量" in html and "web-{n} 生成 web-1" in html


def test_it_makes_the_instances_and_lists_them_on_the_dashboard(alice, tenant_a, host, image, flavor):
    client = browser_client(alice)
    # when
    response = post(client, "/instances/new", create_form(image, flavor))
    # then: all three are building, and the dashboard says which
    assert response.status_code == 302 and response["Location"] == "/instances/"
    made = Instance.objects.filter(tenant=tenant_a).order_by("name")
    assert [i.name for i in made] == ["web-1", "web-2", "web-3"]
    assert all(i.state == InstanceState.BUILDING and i.flavor == flavor for i in made)
    page = client.get(response["Location"]).content.decode()
    assert "3 instances are being built: web-1, web-2, web-3." in page


@pytest.mark.parametrize("count", [None, "", "1"])
def test_it_makes_one_instance_as_before_when_asked_for_one(alice, tenant_a, host, image, flavor, count):
    form = create_form(image, flavor, name="db")
    if count is None:
        del form["count"]  # a form rendered before the field existed
    else:
        form["count"] = count
    response = post(browser_client(alice), "/instances/new", form)
    instance = Instance.objects.get(tenant=tenant_a)
    assert instance.name == "db"
    assert response.status_code == 302 and response["Location"] == f"/instances/{instance.pk}"


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"name": "web"}, "name", "put {n} where the number goes"),
        ({"count": "21"}, "count", "less than or equal to 20"),
        ({"count": "0"}, "count", "greater than or equal to 1"),
    ],
)
def test_it_shows_input_errors_next_to_their_field(alice, tenant_a, host, image, flavor, fields, field, message):
    response = post(browser_client(alice), "/instances/new", create_form(image, flavor, **fields))
    assert response.status_code == 400
    assert message in errors_of(response.content.decode(), field)
    assert not Instance.objects.exists()


def test_it_makes_none_and_says_why_when_the_quota_has_room_for_some(alice, tenant_a, host, image, flavor):
    Quota.objects.filter(tenant=tenant_a).update(instances=2)
    response = post(browser_client(alice), "/instances/new", create_form(image, flavor))
    assert response.status_code == 409
    html = response.content.decode()
    assert "This makes 3 instances; your tenant has 2 left of 2." in errors_of(html, "count")
    assert "Quota exceeded" not in html
    assert not Instance.objects.exists()


def test_it_names_the_names_already_taken(alice, tenant_a, host, image, flavor):
    client = browser_client(alice)
    post(client, "/instances/new", create_form(image, flavor, name="web-3", count="1"))
    response = post(client, "/instances/new", create_form(image, flavor))
    assert response.status_code == 400
    assert "already exist in this tenant: web-3." in errors_of(response.content.decode(), "name")
    assert Instance.objects.count() == 1
