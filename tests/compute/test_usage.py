"""A tenant's resource use, as quotas count it: live instances, resizes in flight at their
larger size, a resize whose claim was given back at its row's size."""

import pytest

from compute.models import Instance
from compute.selectors import tenant_resource_usage

pytestmark = pytest.mark.django_db


def test_it_counts_resizes_in_flight_at_the_larger_size(building, tenant_a):
    # given: one instance of the flavor, and copies of it in other states
    base = Instance.objects.get(pk=building.pk)
    size = {"vcpus": base.vcpus, "memory_mb": base.memory_mb, "disk_gb": base.disk_gb}

    def copy(name: str, state: str, pending: dict) -> None:
        fields = {f.attname: getattr(base, f.attname) for f in Instance._meta.concrete_fields if not f.primary_key}
        fields.update(name=name, state=state, pending=pending, dns_label=name, mac_address=name)
        Instance.objects.create(**fields)

    grown = {"vcpus": size["vcpus"] + 3, "memory_mb": size["memory_mb"] * 2, "disk_gb": size["disk_gb"]}
    copy("growing", "resizing", {"from_state": "running", "size": grown})
    copy("shrinking", "resizing", {"from_state": "stopped", "size": {**size, "vcpus": 1}})
    copy("given-back", "resizing", {"from_state": "running", "size": None})
    copy("gone", "deleted", {})

    # when
    usage = tenant_resource_usage(tenant_a)

    # then: four live instances; the growing one at its new size, the others at their rows'
    assert usage == {
        "instances": 4,
        "vcpus": 4 * size["vcpus"] + 3,
        "memory_mb": 4 * size["memory_mb"] + size["memory_mb"],
        "disk_gb": 4 * size["disk_gb"],
    }
