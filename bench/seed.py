"""Rows every benchmark needs: a tenant with an API token, an image, a small flavor.

Made through the same services the product uses, except where thousands of rows are needed
and the point is only that they exist (bulk_create, in the areas that need it).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from compute.models import Flavor, Image
from tenants import services as tenant_services
from tenants.access import Actor
from tenants.models import ApiToken, Quota, Role, Tenant, User

UNLIMITED = {"instances": 1_000_000, "vcpus": 1_000_000, "memory_mb": 2_000_000_000, "disk_gb": 1_000_000}


@dataclass
class Account:
    user: User
    tenant: Tenant
    token: str  # the full `cpt_…` string

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def account(email: str = "bench@example.com") -> Account:
    """An owner of a tenant with no quota to speak of, and a read-write token for it."""
    user = User.objects.create_user(username=email, email=email)
    tenant = tenant_services.tenant_create(name="Bench", owner=user)
    Quota.objects.filter(tenant=tenant).update(**UNLIMITED)
    _token, secret = tenant_services.token_create(
        actor=Actor(user, tenant, Role.OWNER), name="bench", scope=ApiToken.Scope.WRITE
    )
    return Account(user, tenant, secret)


def image(*, name: str = "Bench image", min_disk_gb: int = 0, min_memory_mb: int = 64) -> Image:
    """A public image whose file is a 512-byte qcow2 header (the test driver stores no contents)."""
    settings.IMAGE_STORE.mkdir(parents=True, exist_ok=True)
    (settings.IMAGE_STORE / "bench.qcow2").write_bytes(b"QFI\xfb" + b"\0" * 508)
    return Image.objects.create(
        name=name,
        os_family="linux",
        os_version="bench",
        size_bytes=512,
        source_path="bench.qcow2",
        min_disk_gb=min_disk_gb,
        min_memory_mb=min_memory_mb,
    )


def flavor(*, name: str = "bench.nano", vcpus: int = 1, memory_mb: int = 128, disk_gb: int = 0) -> Flavor:
    """Small by default: libvirt's test driver gives every pool a fixed 100 GiB, and 200
    instances on one simulated host must fit in it."""
    return Flavor.objects.create(
        name=name,
        vcpus=vcpus,
        memory_mb=memory_mb,
        disk_gb=disk_gb,
        bandwidth_mbit=100,
        traffic_gb=100,
        sla_percent=Decimal("99.9"),
    )
