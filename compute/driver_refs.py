"""Turn rows into the driver's dataclasses, so the driver never sees the ORM."""

from __future__ import annotations

from django.conf import settings

from compute.drivers.base import ComputeDriver, HostError, HostRef, ImageRef
from compute.drivers.libvirt import driver_for
from compute.models import Host, Image, Instance


def host_ref(host: Host, *, shared: bool = False) -> HostRef:
    """`shared`: the driver works in the host's shared pool (the disks of HA instances)."""
    return HostRef(
        name=host.name,
        uri=host.uri,
        storage_pool=host.shared_pool if shared and host.shared_pool else host.storage_pool,
        network=host.network,
        vnc_listen=host.vnc_listen,
        shaping=host.shaping,
        domain_type=host.domain_type,
        dhcp_lease_seconds=settings.DHCP_LEASE_SECONDS,
    )


def image_ref(image: Image) -> ImageRef:
    path = ""
    if image.source_path:
        candidate = settings.IMAGE_STORE / image.source_path
        # Rows can be written without the model's validator (shell, fixtures): check again here.
        # The name must stay one component of the store (a link inside it may point anywhere).
        if candidate.parent != settings.IMAGE_STORE or image.source_path in (".", ".."):
            raise HostError(f"image {image.pk}: its file is not inside the image store")
        path = str(candidate)
    return ImageRef(volume=image.volume_name, format=image.format, size_bytes=image.size_bytes, source_path=path)


def driver(host: Host, *, shared: bool = False) -> ComputeDriver:
    return driver_for(host_ref(host, shared=shared))


def instance_driver(instance: Instance, host: Host | None = None) -> ComputeDriver:
    """The driver of the instance's host (or `host`), in the pool that holds its disk."""
    return driver(host or instance.host, shared=instance.shared_disk)
