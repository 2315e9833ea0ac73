"""Idempotency keys: a create repeated with the same key returns the instance the first made.

Keys are per tenant; a key remembers the fingerprint of the request body it came with, so
the same key with another body is refused rather than answered with the wrong instance.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from base.errors import Conflict
from compute.models import IdempotencyKey, Instance
from tenants.models import Tenant

KEEP_HOURS = 48


class KeyReused(Conflict):
    """The key came with another request body, or its first request failed."""


SHOWN = ("image", "flavor", "host", "tenant")


def claim(tenant: Tenant, key: str, fingerprint: str) -> tuple[IdempotencyKey | None, list[Instance] | None]:
    """Claim `key` for this request inside the caller's transaction: (the new key row, None),
    or (None, the instances an earlier request with the same key and body made, in order).

    Conflict when the key came with another body, or its first request failed."""
    try:
        with transaction.atomic():
            return IdempotencyKey.objects.create(tenant=tenant, key=key, request_hash=fingerprint), None
    except IntegrityError:
        # Another request with this key won (possibly just now: the insert waited on it).
        # With what the answer shows of them (image, flavor, host and tenant), as a new one has.
        previous = IdempotencyKey.objects.select_related(*(f"instance__{r}" for r in SHOWN)).get(tenant=tenant, key=key)
        if previous.request_hash != fingerprint:
            raise KeyReused(_("This Idempotency-Key was used with a different request; use a new key.")) from None
        if previous.instance is None:
            raise KeyReused(_("The first request with this Idempotency-Key failed; use a new key.")) from None
        if not previous.batch:
            return None, [previous.instance]
        made = Instance.objects.select_related(*SHOWN).in_bulk(previous.batch)
        return None, [made[pk] for pk in map(uuid.UUID, previous.batch) if pk in made]


def bind(key_row: IdempotencyKey | None, instances: list[Instance]) -> None:
    """Remember which instances the key's request made: the first, and all of a bulk create."""
    if key_row is not None:
        key_row.instance = instances[0]
        key_row.batch = [str(instance.pk) for instance in instances] if len(instances) > 1 else []
        key_row.save(update_fields=["instance", "batch"])


def expire(*, older_than_hours: int = KEEP_HOURS) -> int:
    """Forget keys older than a client would retry with; returns how many."""
    cutoff = timezone.now() - timedelta(hours=older_than_hours)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted
