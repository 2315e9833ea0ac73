"""How the API shows an instance: one shape for lists, details and write responses."""

from __future__ import annotations

from datetime import UTC

from rest_framework import serializers

from compute import dns, progress
from compute.models import SIZE_FIELDS, Host, Instance, InstanceAction, InstanceState
from compute.transitions import allowed_actions

# The columns an instance's summary is made of: the list reads exactly these with values(),
# since building model objects and running a serializer per row was most of a page's cost.
SUMMARY_COLUMNS = (
    "id",
    "name",
    "state",
    "power_state",
    "ip_address",
    "mac_address",
    "image_id",
    "image__name",
    "flavor_id",
    "flavor__name",
    *SIZE_FIELDS,
    "throttled",
    "host__status",
    "error_step",
    "error_message",
    "created_at",
    "launched_at",
    "deleted_at",
    "iso_id",
    "dns_label",
    "tenant__slug",
)


def _when(value) -> str | None:
    """A timestamp as DRF's DateTimeField shows it in UTC (TIME_ZONE): ISO 8601 with a Z."""
    if not value:
        return None
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def instance_summary(row, steps_done: int = 0) -> dict:
    """An instance as the API shows it, from a mapping of SUMMARY_COLUMNS."""
    state = row["state"]
    flavor_id = row["flavor_id"]
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "state": state,
        "power_state": row["power_state"],
        "progress": progress.percent(state, row["launched_at"], steps_done),
        "ip_address": row["ip_address"],
        "dns_name": dns.fqdn(label=row["dns_label"], tenant_slug=row["tenant__slug"]) or None,
        "mac_address": row["mac_address"],
        "image": str(row["image_id"]),
        "image_name": row["image__name"],
        "flavor": str(flavor_id) if flavor_id else None,
        "flavor_name": row["flavor__name"],
        "size": {
            "vcpus": row["vcpus"],
            "memory_mb": row["memory_mb"],
            "disk_gb": row["disk_gb"],
            "bandwidth_mbit": row["bandwidth_mbit"],
            "traffic_gb": row["traffic_gb"],
            "sla_percent": f"{row['sla_percent']:.3f}",
        },
        "throttled": row["throttled"],
        # The host is down: the guest's real state is unknown until it answers again.
        "host_down": row["host__status"] == Host.Status.DOWN,
        "allowed_actions": allowed_actions(state, has_iso=row["iso_id"] is not None),
        "error": {"step": row["error_step"], "message": row["error_message"]} if row["error_message"] else None,
        "created_at": _when(row["created_at"]),
        "launched_at": _when(row["launched_at"]),
        "deleted_at": _when(row["deleted_at"]),
    }


def summary_row(instance: Instance) -> dict:
    """SUMMARY_COLUMNS read off a model object (image and flavor joined or fetched)."""
    row = {column: getattr(instance, column) for column in SUMMARY_COLUMNS if "__" not in column}
    row["image__name"] = instance.image.name
    row["flavor__name"] = instance.flavor.name if instance.flavor_id else None
    row["host__status"] = instance.host.status
    row["tenant__slug"] = instance.tenant.slug
    return row


class SizeSerializer(serializers.Serializer):
    vcpus = serializers.IntegerField()
    memory_mb = serializers.IntegerField()
    disk_gb = serializers.IntegerField()
    bandwidth_mbit = serializers.IntegerField()
    traffic_gb = serializers.IntegerField()
    sla_percent = serializers.DecimalField(max_digits=6, decimal_places=3)


class ErrorSerializer(serializers.Serializer):
    step = serializers.CharField()
    message = serializers.CharField()


class ActionSerializer(serializers.ModelSerializer):
    user = serializers.EmailField(source="user.email", default=None, read_only=True)

    class Meta:
        model = InstanceAction
        fields = ["action", "step", "status", "user", "started_at", "duration_ms", "error"]


class InstanceSerializer(serializers.ModelSerializer):
    """Declares the shape for the OpenAPI schema; the output itself is `instance_summary`."""

    image_name = serializers.CharField(source="image.name", read_only=True)
    flavor_name = serializers.CharField(source="flavor.name", default=None, read_only=True)
    size = SizeSerializer(read_only=True)
    progress = serializers.IntegerField(read_only=True)
    error = ErrorSerializer(read_only=True, allow_null=True)
    allowed_actions = serializers.ListField(child=serializers.CharField(), read_only=True)
    host_down = serializers.BooleanField(
        read_only=True, help_text="Its host is down: the state shown is the last one known."
    )
    dns_name = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="<instance>.<tenant>.<zone>: what the guests of its network resolve to its address.",
    )

    class Meta:
        model = Instance
        fields = [
            "id",
            "name",
            "state",
            "power_state",
            "progress",
            "ip_address",
            "dns_name",
            "mac_address",
            "image",
            "image_name",
            "flavor",
            "flavor_name",
            "size",
            "throttled",
            "host_down",
            "allowed_actions",
            "error",
            "created_at",
            "launched_at",
            "deleted_at",
        ]

    def to_representation(self, instance) -> dict:
        done = getattr(instance, "steps_done", None)  # known to whoever just made it
        if done is None:
            building = instance.state == InstanceState.BUILDING
            done = progress.steps_done([instance.pk]).get(instance.pk, 0) if building else 0
        return instance_summary(summary_row(instance), done)


class GroupRefSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()


class InstanceDetailSerializer(InstanceSerializer):
    actions = ActionSerializer(many=True, read_only=True)
    security_groups = GroupRefSerializer(many=True, read_only=True)

    class Meta(InstanceSerializer.Meta):
        fields = [*InstanceSerializer.Meta.fields, "user_data", "security_groups", "actions"]

    def to_representation(self, instance) -> dict:
        return {
            **super().to_representation(instance),
            "user_data": instance.user_data,
            "security_groups": [{"id": str(g.pk), "name": g.name} for g in instance.security_groups.all()],
            "actions": ActionSerializer(instance.actions.all(), many=True).data,
        }
