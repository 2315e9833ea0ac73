"""Instance sizes: from a flavor or custom, checked against the operator's limits."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from decimal import Decimal

from django.conf import settings
from django.utils.translation import gettext as _

from compute.models import SIZE_FIELDS, Flavor


@dataclass(frozen=True, kw_only=True)
class Size:
    vcpus: int
    memory_mb: int
    disk_gb: int
    bandwidth_mbit: int
    traffic_gb: int
    sla_percent: Decimal

    @classmethod
    def of_flavor(cls, flavor: Flavor) -> Size:
        return cls(**{name: getattr(flavor, name) for name in SIZE_FIELDS})

    @classmethod
    def of_instance(cls, instance) -> Size:
        return cls(**{name: getattr(instance, name) for name in SIZE_FIELDS})

    def as_fields(self) -> dict:
        return asdict(self)

    def times(self, count: int) -> Size:
        """`count` instances of this size together, as a bulk create asks them of the quota."""
        return replace(
            self,
            vcpus=self.vcpus * count,
            memory_mb=self.memory_mb * count,
            disk_gb=self.disk_gb * count,
            bandwidth_mbit=self.bandwidth_mbit * count,
            traffic_gb=self.traffic_gb * count,
        )

    def as_json(self) -> dict:
        return {**asdict(self), "sla_percent": str(self.sla_percent)}

    @classmethod
    def from_json(cls, data: dict) -> Size:
        return cls(**{**data, "sla_percent": Decimal(data["sla_percent"])})


def custom_limits() -> dict[str, tuple[int, int]]:
    """(min, max) of each custom size dimension, as the operator configured them."""
    return dict(settings.CUSTOM_SIZE_LIMITS)


def custom_size_errors(values: dict[str, int]) -> dict[str, list[str]]:
    errors = {}
    for name, (low, high) in custom_limits().items():
        value = values.get(name)
        if value is None:
            errors[name] = [_("This field is required for a custom size.")]
        elif not low <= value <= high:
            errors[name] = [_("Must be between %(low)s and %(high)s.") % {"low": low, "high": high}]
    return errors


def custom_size(values: dict[str, int]) -> Size:
    return Size(
        vcpus=values["vcpus"],
        memory_mb=values["memory_mb"],
        disk_gb=values["disk_gb"],
        bandwidth_mbit=values["bandwidth_mbit"],
        traffic_gb=values["traffic_gb"],
        sla_percent=Decimal(settings.CUSTOM_SIZE_SLA_PERCENT),
    )
