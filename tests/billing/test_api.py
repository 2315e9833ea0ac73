"""/api/v1/usage (month to date) and /api/v1/invoices: owners only, tenants apart, Decimal strings."""

from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing import invoicing
from billing.models import Invoice
from tenants.models import ApiToken
from tests.billing.conftest import MIB, at, create, priced_flavor, sample
from tests.conftest import client_for, token_for

MID_MARCH = at(2026, 3, 11)


@pytest.fixture
def instances(tasks_inline, host, image, alice, tenant_a, charlie, tenant_b):
    """A's web (0.010/h, 1 GiB included) and B's own instance, both since March 1."""
    web = create(alice, tenant_a, image, "web", priced_flavor("small", traffic_gb=1), at(2026, 3, 1))
    theirs = create(charlie, tenant_b, image, "theirs", priced_flavor("other"), at(2026, 3, 1))
    sample(host, at(2026, 3, 10), (web, 512 * MIB), (theirs, 10 * MIB))
    return {"web": web, "theirs": theirs}


def get_usage(client):
    with time_machine.travel(MID_MARCH, tick=False):
        return client.get(reverse("api:usage"))


def test_it_shows_the_owner_the_month_to_date(instances, alice):
    # when
    response = get_usage(client_for(alice))

    # then: 240 h x 0.010, in Decimal strings
    assert response.status_code == 200
    body = response.json()
    assert (body["period"], body["currency"], body["total_so_far"]) == ("2026-03-01", "EUR", "2.40")
    (web,) = body["instances"]
    assert web == {
        "id": str(instances["web"].pk),
        "name": "web",
        "cost_so_far": "2.40",
        "running_seconds": 240 * 3600,
        "traffic": {
            "sent_bytes": 512 * 1024 * 1024,
            "allowance_bytes": 1024**3,
            "percent": "50.0",
            "policy": "bill",
            "throttled": False,
        },
    }


def test_it_costs_so_far_what_the_draft_would_bill(instances, tenant_a, alice):
    response = get_usage(client_for(alice))

    # when: the month's draft at the same moment
    with time_machine.travel(MID_MARCH, tick=False):
        draft = invoicing.invoice_generate(tenant=tenant_a, period=MID_MARCH.date())

    # then
    assert Decimal(response.json()["total_so_far"]) == draft.subtotal == Decimal("2.40")


def test_it_shows_usage_to_owners_only(instances, alice, bob, vera, tenant_a):
    read_only = token_for(alice, tenant_a, scope=ApiToken.Scope.READ)

    # when / then
    assert get_usage(client_for(bob)).status_code == 403
    assert get_usage(client_for(vera)).status_code == 403
    assert get_usage(client_for(token=read_only)).status_code == 200


def test_it_never_shows_another_tenant_s_instances_in_usage(instances, charlie):
    # when
    response = get_usage(client_for(charlie))

    # then
    assert response.status_code == 200
    assert [row["id"] for row in response.json()["instances"]] == [str(instances["theirs"].pk)]


@pytest.fixture
def invoices(instances, tenant_a, tenant_b):
    """A's March issued, A's February paid, A's April a draft; B's March issued."""
    with time_machine.travel(at(2026, 4, 1, 1), tick=False):
        march = invoicing.invoice_issue(invoice=invoicing.invoice_generate(tenant=tenant_a, period=MID_MARCH.date()))
        theirs = invoicing.invoice_issue(invoice=invoicing.invoice_generate(tenant=tenant_b, period=MID_MARCH.date()))
    february = Invoice.objects.create(tenant=tenant_a, period=at(2026, 2, 1).date(), currency="EUR")
    february = invoicing.invoice_mark_paid(invoice=invoicing.invoice_issue(invoice=february))
    draft = Invoice.objects.create(tenant=tenant_a, period=at(2026, 4, 1).date(), currency="EUR")
    return {"march": march, "february": february, "draft": draft, "theirs": theirs}


def test_it_lists_the_owner_s_issued_and_paid_invoices_without_drafts(invoices, alice):
    # when
    response = client_for(alice).get(reverse("api:invoice-list"))

    # then
    assert response.status_code == 200
    rows = response.json()["results"]
    assert [(row["period"], row["state"]) for row in rows] == [("2026-03-01", "issued"), ("2026-02-01", "paid")]
    assert rows[0]["number"] == invoices["march"].number
    assert (rows[0]["subtotal"], rows[0]["tax"], rows[0]["total"], rows[0]["tax_rate"]) == (
        "5.00",
        "0.00",
        "5.00",
        "0.0000",
    )


def test_it_lists_invoices_in_a_fixed_number_of_queries(invoices, tenant_a, alice, django_assert_num_queries):
    client = client_for(alice)
    with CaptureQueriesContext(connection) as few:
        client.get(reverse("api:invoice-list"))
    for month in (5, 6, 7):
        issued = Invoice.objects.create(tenant=tenant_a, period=at(2026, month, 1).date(), currency="EUR")
        invoicing.invoice_issue(invoice=issued)

    # when / then
    with django_assert_num_queries(len(few.captured_queries)):
        assert len(client.get(reverse("api:invoice-list")).json()["results"]) == 5


def test_it_shows_an_invoice_with_its_lines_as_decimal_strings(invoices, alice):
    march = invoices["march"]

    # when
    response = client_for(alice).get(reverse("api:invoice-detail", args=[march.pk]))

    # then
    assert response.status_code == 200
    (line,) = response.json()["lines"]
    assert line["kind"] == "running" and line["description"] == "web: small, 744.000000 h"
    assert (line["quantity"], line["unit_price"], line["amount"]) == ("744.000000", "0.010000", "5.00")
    assert line["detail"]["cap_applied"] is True


def test_it_downloads_csv_and_pdf(invoices, alice):
    march, client = invoices["march"], client_for(alice)

    # when
    as_csv = client.get(reverse("api:invoice-csv", args=[march.pk]))
    as_pdf = client.get(reverse("api:invoice-pdf", args=[march.pk]))

    # then
    assert as_csv.status_code == 200 and as_csv["Content-Type"] == "text/csv; charset=utf-8"
    assert as_csv["Content-Disposition"] == f'attachment; filename="{march.number}.csv"'
    assert as_csv.content.decode().splitlines()[-1] == f"{march.number},2026-03,total,,,,,5.00,EUR"
    assert as_pdf.status_code == 200 and as_pdf["Content-Type"] == "application/pdf"
    assert as_pdf.content.startswith(b"%PDF-") and as_pdf.content.rstrip().endswith(b"%%EOF")


def test_it_hides_drafts_even_from_the_owner(invoices, alice):
    draft = invoices["draft"]

    # when / then
    for name in ("api:invoice-detail", "api:invoice-csv", "api:invoice-pdf"):
        assert client_for(alice).get(reverse(name, args=[draft.pk])).status_code == 404, name


def test_it_shows_invoices_to_owners_only(invoices, bob, vera):
    march = invoices["march"]

    # when / then
    for user in (bob, vera):
        client = client_for(user)
        assert client.get(reverse("api:invoice-list")).status_code == 403
        assert client.get(reverse("api:invoice-detail", args=[march.pk])).status_code == 403
        assert client.get(reverse("api:invoice-pdf", args=[march.pk])).status_code == 403


def test_it_answers_404_for_another_tenant_s_invoice(invoices, charlie):
    client = client_for(charlie)

    # when
    listed = client.get(reverse("api:invoice-list")).json()["results"]

    # then: only B's own; A's are unknown, not forbidden
    assert [row["id"] for row in listed] == [str(invoices["theirs"].pk)]
    for name in ("api:invoice-detail", "api:invoice-csv", "api:invoice-pdf"):
        assert client.get(reverse(name, args=[invoices["march"].pk])).status_code == 404, name
