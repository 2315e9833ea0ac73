"""DNS names of instances: `<instance>.<tenant>.<PORTAL_DNS_ZONE>`.

The first label comes from the instance's name, made DNS-safe (RFC 1123: lower-case letters,
digits and inner hyphens, at most 63 characters). Two names that make the same label ("Web 1"
and "web-1") cannot share it: the later one gets the first six hex digits of its id appended.
The label is stored (Instance.dns_label) so a name stays put until the instance is renamed; the
host network's DNS server (libvirt's dnsmasq, `<dns><host>`) answers it for the guests there.
"""

from __future__ import annotations

import re

from django.conf import settings

from compute.models import Instance, InstanceState

LABEL_MAX = 63
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def dns_safe(text: str) -> str:
    """`text` as one DNS label, possibly empty."""
    return _NOT_DNS.sub("-", text.lower()).strip("-")[:LABEL_MAX].strip("-")


def tenant_label(slug: str) -> str:
    return dns_safe(slug) or "tenant"


def base_label(name: str) -> str:
    """The label a name gives when no other live instance of the tenant has it."""
    return dns_safe(name) or "vm"


def choose_label(instance: Instance, name: str, *, taken: set[str] | None = None) -> str:
    """The label for `instance` called `name`, unique among its tenant's live instances. The
    caller holds the tenant's quota row lock, so two creates or renames never pick the same.
    `taken`: the labels the others hold, when the caller has read them under that lock (a new
    instance has none of its own yet)."""
    base = base_label(name)
    if taken is not None:
        free = base not in taken
    else:
        others = Instance.objects.filter(tenant_id=instance.tenant_id, dns_label=base)
        others = others.exclude(state=InstanceState.DELETED)
        if instance.pk is not None:
            others = others.exclude(pk=instance.pk)
        free = not others.exists()
    if free:
        return base
    suffix = instance.pk.hex[:6]
    return f"{base[: LABEL_MAX - len(suffix) - 1].rstrip('-')}-{suffix}"


def fqdn(*, label: str, tenant_slug: str) -> str:
    """The instance's full name, or "" for one that has no label (made before names existed)."""
    if not label:
        return ""
    return f"{label}.{tenant_label(tenant_slug)}.{settings.PORTAL_DNS_ZONE.strip('.')}"


def name_of(instance: Instance) -> str:
    return fqdn(label=instance.dns_label, tenant_slug=instance.tenant.slug)
