"""The instance routes' input, checked strictly, and the shapes of their other answers."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from compute import services
from compute.models import CUSTOM_SIZE_FIELDS
from compute.sizing import Size, custom_limits, custom_size, custom_size_errors
from portal.api.compute.presenters import InstanceSerializer
from portal.api.inputs import StrictSerializer, reject_nul


class SizeInputMixin(serializers.Serializer):
    flavor = serializers.UUIDField(required=False, allow_null=True)
    vcpus = serializers.IntegerField(required=False, min_value=1, max_value=1024)
    memory_mb = serializers.IntegerField(required=False, min_value=1, max_value=16 * 1024 * 1024)
    disk_gb = serializers.IntegerField(required=False, min_value=1, max_value=1024 * 1024)
    bandwidth_mbit = serializers.IntegerField(required=False, min_value=1, max_value=100000)
    traffic_gb = serializers.IntegerField(required=False, min_value=0, max_value=10**7)

    CUSTOM = CUSTOM_SIZE_FIELDS

    def documented_variants(self) -> list[dict]:
        """For the OpenAPI document (portal.openapi): a flavor, or every custom dimension within
        the operator's limits (what `validate` and compute.sizing.custom_size_errors accept)."""
        limits = {name: {"minimum": low, "maximum": high} for name, (low, high) in custom_limits().items()}
        return [
            {
                "description": "A standard flavor.",
                "without": self.CUSTOM,
                "required": ["flavor"],
                "bounds": {"flavor": {"nullable": False}},
            },
            {
                "description": "A custom size: every dimension, within the operator's limits.",
                "without": ["flavor"],
                "required": self.CUSTOM,
                "bounds": limits,
            },
        ]

    def validate(self, attrs):
        attrs = super().validate(attrs)
        custom = {k: attrs[k] for k in self.CUSTOM if k in attrs}
        if attrs.get("flavor") and custom:
            raise serializers.ValidationError(
                {"flavor": ["Give either a flavor or a custom size (vcpus, memory_mb, ...), not both."]}
            )
        if attrs.get("flavor"):
            flavor = services.resolve_flavor(attrs["flavor"])
            attrs["size"] = Size.of_flavor(flavor)
            attrs["flavor_row"] = flavor  # the service need not read it again
        elif custom:
            if errors := custom_size_errors(custom):
                raise serializers.ValidationError(errors)
            attrs["size"] = custom_size(custom)
        else:
            raise serializers.ValidationError({"flavor": ["Give a flavor, or a custom size (vcpus, memory_mb, ...)."]})
        return attrs


class InstanceCreateSerializer(StrictSerializer, SizeInputMixin):
    name = serializers.CharField(max_length=255)
    image = serializers.UUIDField()
    ssh_key_ids = serializers.ListField(child=serializers.UUIDField(), required=False, max_length=32)
    user_data = serializers.CharField(required=False, allow_blank=True, max_length=64 * 1024, trim_whitespace=False)
    password = serializers.CharField(
        required=False,
        write_only=True,
        min_length=services.PASSWORD_LENGTH[0],
        max_length=services.PASSWORD_LENGTH[1],
        trim_whitespace=False,
        help_text="A password for the image's default user (SSH password login is switched on). "
        "Only its SHA-512 crypt hash goes to the guest; the portal keeps nothing of it.",
    )
    generate_password = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Make up a password for the image's default user, shown once in this response.",
    )
    security_group_ids = serializers.ListField(
        child=serializers.UUIDField(),
        required=False,
        max_length=16,
        help_text="The security groups it joins; without this, the tenant's default group.",
    )
    count = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=settings.BULK_CREATE_MAX,
        help_text="Make this many instances of the same image and size, all or none (the quota and "
        "the hosts must have room for every one). `name` is then a pattern: `web-{n}` names them "
        "web-1, web-2, ...; `{n:02}` pads the number (web-01). The answer is then "
        '`{"instances": [...]}`. Without `count`, one instance named `name` is made.',
    )


class InstanceCreatedSerializer(InstanceSerializer):
    """The instance as accepted, with the password made up for it (shown this once)."""

    password = serializers.CharField(
        read_only=True, allow_null=True, help_text="Only with generate_password: the default user's password."
    )

    class Meta(InstanceSerializer.Meta):
        fields = [*InstanceSerializer.Meta.fields, "password"]


class InstancesCreatedSerializer(serializers.Serializer):
    """A bulk create (`count`) as accepted: its instances, in the order of their numbers."""

    instances = InstanceCreatedSerializer(many=True)


class ResetPasswordSerializer(StrictSerializer):
    username = serializers.CharField(
        required=False, default="root", max_length=32, help_text="The guest's user (default root)."
    )
    password = serializers.CharField(
        required=False,
        min_length=services.PASSWORD_LENGTH[0],
        max_length=services.PASSWORD_LENGTH[1],
        trim_whitespace=False,
        help_text="The new password; without one, a password is made up and shown once.",
    )


class PasswordResultSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(allow_null=True, help_text="The password made up for the user, or null.")


class ConsoleLogSerializer(serializers.Serializer):
    log = serializers.CharField(allow_blank=True, help_text="What the serial console printed last (UTF-8).")
    size = serializers.IntegerField(help_text="Bytes shown.")
    max_kib = serializers.IntegerField(help_text="The most asked for, in KiB.")


# How much of the console log one request reads, in KiB.
CONSOLE_LOG_KIB = (64, 1024)


class ResizeSerializer(StrictSerializer, SizeInputMixin):
    pass


class RebuildSerializer(StrictSerializer):
    image = serializers.UUIDField()


class SnapshotSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)


class EmptySerializer(StrictSerializer):
    pass


class ConsoleSerializer(serializers.Serializer):
    url = serializers.URLField()
    websocket_url = serializers.CharField()
    expires_in = serializers.IntegerField()


@extend_schema_serializer(many=False)
class InstancePageSerializer(serializers.Serializer):
    """A page of the instance list: numbered (`?page=`, with `count`) or by cursor (`?cursor=`,
    without `count`)."""

    count = serializers.IntegerField(required=False, help_text="Numbered pages only: how many in all.")
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = InstanceSerializer(many=True)


class InstanceUpdateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=255)

    def validate_name(self, value: str) -> str:
        return reject_nul(value, "name").strip()
