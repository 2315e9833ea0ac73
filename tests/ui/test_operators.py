"""Operators: the dashboard at /ops/, the Django admin's search, filters and actions, suspension."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from base import units
from compute.models import Instance, InstanceAction, InstanceState
from tenants import services as tenant_services
from tenants.models import AuditEvent, Tenant
from tests.conftest import make_user
from tests.ui.conftest import browser_client, post

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser(db):
    user = make_user("root@example.com", staff=True)
    user.is_superuser = True
    user.save(update_fields=["is_superuser"])
    return user


def test_it_shows_operators_hosts_capacity_states_and_failures(operator, host, make_instance):
    make_instance("web-1")
    broken = make_instance("web-2", built=False)
    Instance.objects.filter(pk=broken.pk).update(state="error", error_step="seed", error_message="disk full")
    InstanceAction.objects.create(instance=broken, action="create", step="seed", status="failed", error="disk full")

    page = browser_client(operator).get("/ops/").content.decode()

    capacity = host.capacity()
    host.refresh_from_db()
    assert f'data-capacity="vcpu">{host.vcpus_used} of {capacity["vcpus"]}<' in page
    assert f'data-capacity="memory">{units.mib_of(host.memory_mb_used, capacity["memory_mb"])}<' in page
    assert 'data-state-count="running">1<' in page and 'data-state-count="error">1<' in page
    assert "disk full" in page and "seed" in page and "Tenant A" in page
    assert 'id="revenue"' in page


def test_it_polls_the_hosts_panel(operator, host):
    panel = browser_client(operator).get("/ops/hosts").content.decode()

    assert panel.lstrip().startswith('<div id="ops-hosts"') and host.name in panel


def test_it_keeps_the_operator_dashboard_from_tenants(alice, tenant_a):
    assert browser_client(alice).get("/ops/").status_code == 403
    assert browser_client(alice).get("/ops/hosts").status_code == 403


def test_it_suspends_and_reactivates_tenants_from_the_admin(superuser, alice, tenant_a, make_instance):
    instance = make_instance()
    client = browser_client(superuser)
    changelist = reverse("admin:tenants_tenant_changelist")

    post(client, changelist, {"action": "suspend", "_selected_action": [str(tenant_a.pk)]})

    tenant_a.refresh_from_db()
    assert tenant_a.status == Tenant.Status.SUSPENDED and superuser.email in tenant_a.suspended_reason
    event = AuditEvent.objects.get(action="tenant.suspend")
    assert event.user == superuser and event.tenant == tenant_a
    # the tenant sees it, and cannot start what is stopped
    Instance.objects.filter(pk=instance.pk).update(state="stopped")
    start = post(browser_client(alice), f"/instances/{instance.pk}/start", follow=True).content.decode()
    assert "is suspended" in start and Instance.objects.get(pk=instance.pk).state == InstanceState.STOPPED

    post(client, changelist, {"action": "reactivate", "_selected_action": [str(tenant_a.pk)]})

    tenant_a.refresh_from_db()
    assert tenant_a.status == Tenant.Status.ACTIVE and tenant_a.suspended_reason == ""
    assert AuditEvent.objects.filter(action="tenant.reactivate", user=superuser).exists()


def test_it_flips_only_the_status_and_records_who(alice, tenant_a):
    tenant_services.tenant_set_suspended(actor=None, tenant=tenant_a, reason="Invoice overdue.")
    tenant_services.tenant_set_active(actor=None, tenant=tenant_a)
    tenant_services.tenant_set_active(actor=None, tenant=tenant_a)  # already active: nothing happens

    actions = list(AuditEvent.objects.filter(tenant=tenant_a).values_list("action", "user").order_by("created_at"))
    assert actions[-2:] == [("tenant.suspend", None), ("tenant.reactivate", None)]


def test_it_stops_and_retries_instances_from_the_admin(superuser, make_instance):
    instance = make_instance()
    changelist = reverse("admin:compute_instance_changelist")
    client = browser_client(superuser)

    post(client, changelist, {"action": "stop", "_selected_action": [str(instance.pk)]})
    refused = post(client, changelist, {"action": "retry", "_selected_action": [str(instance.pk)]}, follow=True)

    assert Instance.objects.get(pk=instance.pk).state == InstanceState.STOPPING
    assert "Only an instance in error can be retried; this one is stopping." in refused.content.decode()


def test_it_searches_and_filters_every_model_in_the_admin(superuser, make_instance, host):
    make_instance()
    client = browser_client(superuser)

    for model, model_admin in admin.site._registry.items():
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        assert client.get(url, {"q": "web"}).status_code == 200, url
        if model._meta.app_label in ("tenants", "compute"):
            assert model_admin.search_fields, f"{model.__name__} has no search"
