"""Operator writes for hosts and images."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from functools import partial

from django.db import transaction
from django.utils.translation import gettext as _

from base.errors import Conflict, Invalid
from compute import history, images, tasks
from compute.driver_refs import driver
from compute.drivers.base import DomainStats, HostRef
from compute.drivers.libvirt import driver_for
from compute.models import Host, Image, Instance, InstanceState, IpPool
from tenants.access import Actor
from tenants.services import audit


def host_register(
    *,
    name: str,
    uri: str,
    queue: str | None = None,
    storage_pool: str = "default",
    network: str = "default",
    vnc_listen: str = "127.0.0.1",
    shaping: bool = True,
    domain_type: str | None = None,
    allow_kvm: bool = True,
    pool_first: str | None = None,
    pool_last: str | None = None,
    segment: str = "",
    shared_pool: str = "",
    **ratios,
) -> Host:
    """Probe the host through libvirt, then record it with its capacity and IP pool.

    The pool is `pool_first`..`pool_last` when given; otherwise the network's DHCP range,
    which is only safe on a network whose dnsmasq serves nothing but the portal's entries.

    The probe happens before the transaction: no hypervisor call inside an open one.
    """
    probe = HostRef(name, uri, storage_pool, network, vnc_listen, shaping, domain_type or "qemu")
    try:
        drv = driver_for(probe)
        info = drv.host_info()
        net = drv.network_info()
    except Exception as exc:  # a wrong URI, pool or network name: libvirt's own words say which
        raise Invalid("uri", _("Cannot use this host: %(error)s") % {"error": exc}) from None
    if shared_pool:
        if not segment:
            raise Invalid("shared_pool", _("A shared pool is shared by the hosts of a segment; name the segment."))
        try:
            driver_for(replace(probe, storage_pool=shared_pool)).host_info()
        except Exception as exc:
            raise Invalid("shared_pool", _("Cannot use this pool: %(error)s") % {"error": exc}) from None
    if domain_type is None:
        domain_type = "test" if uri.startswith("test:") else ("kvm" if info.kvm_available and allow_kvm else "qemu")
    probe = replace(probe, domain_type=domain_type)
    _check_pool(net.cidr, net.gateway, pool_first, pool_last)
    _check_segment(name, segment, net.cidr)
    with transaction.atomic():
        host, _created = Host.objects.update_or_create(
            name=name,
            defaults={
                "uri": uri,
                "queue": queue or f"host.{name}",
                "storage_pool": storage_pool,
                "network": network,
                "vnc_listen": vnc_listen,
                "shaping": shaping,
                "segment": segment,
                "shared_pool": shared_pool,
                "domain_type": domain_type,
                "vcpus_total": info.vcpus,
                "memory_mb_total": info.memory_mb,
                "disk_gb_total": info.disk_gb,
                **ratios,
            },
        )
        IpPool.objects.update_or_create(
            host=host,
            defaults={
                "cidr": net.cidr,
                "gateway": net.gateway,
                "first": pool_first or net.first,
                "last": pool_last or net.last,
            },
        )
    return host


def _check_segment(name: str, segment: str, cidr: str) -> None:
    """A host joins a segment only with a network on the segment's subnet."""
    if not segment:
        return
    others = IpPool.objects.filter(host__segment=segment).exclude(host__name=name).values_list("cidr", flat=True)
    for other in set(others):
        if other != cidr:
            raise Invalid(
                "segment",
                _("The hosts of segment %(segment)s are on %(other)s; this host's network is %(cidr)s.")
                % {"segment": segment, "other": other, "cidr": cidr},
            )


def _check_pool(cidr: str, gateway: str, first: str | None, last: str | None) -> None:
    if first is None and last is None:
        return
    subnet = ipaddress.ip_network(cidr)
    low, high = ipaddress.ip_address(first), ipaddress.ip_address(last)
    if low not in subnet or high not in subnet:
        raise Invalid("pool_first", _("The pool must lie inside the host's network %(cidr)s.") % {"cidr": cidr})
    if low > high:
        raise Invalid("pool_last", _("pool_last comes before pool_first."))
    if low <= ipaddress.ip_address(gateway) <= high:
        raise Invalid("pool_first", _("The pool must not include the gateway %(gateway)s.") % {"gateway": gateway})


def host_set_status(*, actor: Actor | None, host: Host, status: str) -> Host:
    history.set_host_status([host.pk], status)
    host.refresh_from_db()
    audit(actor, "host.status", tenant=None, target=host.name, status=status)
    return host


@transaction.atomic
def image_delete(*, actor: Actor | None, image: Image) -> None:
    """Retire an image. Instances still built from it keep their disks; new ones cannot use it.

    A URL import still downloading is cancelled (its task stops at its next progress note and
    removes what it wrote). An operator image's file leaves the image store once no live
    instance needs it, now or when the last of them is deleted (compute.tasks.delete)."""
    live = Instance.objects.filter(image=image).exclude(state=InstanceState.DELETED)
    if image.visibility == Image.Visibility.PRIVATE and live.exists() and image.host_id:
        raise Conflict(_("Instances still use this snapshot; delete them first."))
    if image.state == Image.State.PENDING and not image.source_url:
        raise Conflict(_("This image is still being created."))
    Image.objects.filter(pk=image.pk).update(state=Image.State.DELETED)
    audit(actor, "image.delete", target=str(image.pk), name=image.name)
    transaction.on_commit(partial(images.remove_unused_file, str(image.pk)))
    # Each host drops its copy once no instance there is built on it (or, if some still are,
    # when the last of them is deleted).
    hosts = Host.objects.filter(pk=image.host_id) if image.host_id else Host.objects.exclude(status=Host.Status.DOWN)
    for host_id, queue in hosts.values_list("id", "queue"):
        transaction.on_commit(partial(_queue_volume_removal, str(image.pk), str(host_id), queue))


def _queue_volume_removal(image_id: str, host_id: str, queue: str) -> None:
    tasks.delete_image_volumes.apply_async(args=[image_id, host_id], queue=queue)


def host_counters(host: Host) -> list[DomainStats]:
    """Every guest's CPU, disk and network counters on the host, in one hypervisor call (metering)."""
    return driver(host).all_stats()
