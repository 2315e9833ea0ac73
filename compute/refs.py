"""Turn rows into the driver's dataclasses, so the driver never sees the ORM."""

from __future__ import annotations

from django.conf import settings

from compute.drivers.base import ComputeDriver, HostRef, ImageRef
from compute.drivers.libvirt import driver_for
from compute.models import Host, Image


def host_ref(host: Host) -> HostRef:
    return HostRef(
        name=host.name,
        uri=host.uri,
        storage_pool=host.storage_pool,
        network=host.network,
        vnc_listen=host.vnc_listen,
        shaping=host.shaping,
        domain_type=host.domain_type,
    )


def image_ref(image: Image) -> ImageRef:
    path = ""
    if image.source_path:
        path = str(settings.IMAGE_STORE / image.source_path)
    return ImageRef(volume=image.volume_name, format=image.format, size_bytes=image.size_bytes, source_path=path)


def driver(host: Host) -> ComputeDriver:
    return driver_for(host_ref(host))
