from __future__ import annotations

import re
from datetime import UTC

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, extend_schema_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from compute import console, images, services
from compute import hosts as host_services
from compute.lock_objects import lock_instance
from compute.models import SIZE_FIELDS, Flavor, Host, Image, Instance, InstanceAction, InstanceState, InstanceTag
from compute.operations import PROVISION_STEPS
from compute.selectors import images_visible_filter
from compute.sizing import Size, custom_limits, custom_size, custom_size_errors
from compute.transitions import allowed_actions
from portal.api import NewestFirstCursor, RejectUnknownFields, StrictSerializer, reject_nul
from portal.viewsets import TenantScopedViewSet
from tenants.access import actor_for_request
from tenants.permissions import IsStaff
from tenants.services import audit

# An upload's form fields and part headers around the image file itself.
UPLOAD_FORM_SLACK = 64 * 1024

# -- images and flavors ------------------------------------------------------------------------


class ImageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Image
        fields = [
            "id",
            "name",
            "os_family",
            "os_version",
            "format",
            "size_bytes",
            "checksum",
            "min_disk_gb",
            "min_memory_mb",
            "visibility",
            "state",
            "created_at",
        ]


class ImageViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, TenantScopedViewSet):
    """Public images and the tenant's own snapshots. DELETE retires a snapshot."""

    queryset = Image.objects.exclude(state=Image.State.DELETED)
    serializer_class = ImageSerializer

    def scope(self, queryset):
        return queryset.filter(images_visible_filter(self.actor.tenant))

    def perform_destroy(self, image):
        if image.tenant_id != self.actor.tenant.pk:
            self.permission_denied(self.request, "Public images are managed by operators.")
        host_services.image_delete(actor=self.actor, image=image)


class FlavorSerializer(serializers.ModelSerializer):
    class Meta:
        model = Flavor
        fields = [
            "id",
            "name",
            "vcpus",
            "memory_mb",
            "disk_gb",
            "bandwidth_mbit",
            "traffic_gb",
            "sla_percent",
        ]


class FlavorViewSet(viewsets.ReadOnlyModelViewSet):
    """The catalogue of standard sizes; readable without logging in."""

    queryset = Flavor.objects.filter(active=True)
    serializer_class = FlavorSerializer
    permission_classes = [AllowAny]
    pagination_class = None


# -- instances ---------------------------------------------------------------------------------


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
)


def _when(value) -> str | None:
    """A timestamp as DRF's DateTimeField shows it in UTC (TIME_ZONE): ISO 8601 with a Z."""
    if not value:
        return None
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _progress(state: str, launched_at, steps_done: int) -> int:
    if state != InstanceState.BUILDING:
        return 0 if state == InstanceState.ERROR and not launched_at else 100
    return int(100 * steps_done / (len(PROVISION_STEPS) + 1))


def instance_summary(row, steps_done: int = 0) -> dict:
    """An instance as the API shows it, from a mapping of SUMMARY_COLUMNS."""
    state = row["state"]
    flavor_id = row["flavor_id"]
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "state": state,
        "power_state": row["power_state"],
        "progress": _progress(state, row["launched_at"], steps_done),
        "ip_address": row["ip_address"],
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
        "allowed_actions": allowed_actions(state),
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
    return row


def steps_done(building_ids) -> dict:
    """Finished provisioning steps per building instance, in one query for a whole page."""
    if not building_ids:
        return {}
    return dict(
        InstanceAction.objects.filter(
            instance_id__in=building_ids,
            action__in=["create", "retry"],
            status=InstanceAction.Status.DONE,
            step__in=PROVISION_STEPS,
        )
        .values("instance_id")
        .annotate(n=Count("step", distinct=True))
        .values_list("instance_id", "n")
    )


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

    class Meta:
        model = Instance
        fields = [
            "id",
            "name",
            "state",
            "power_state",
            "progress",
            "ip_address",
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
        building = instance.state == InstanceState.BUILDING
        done = steps_done([instance.pk]).get(instance.pk, 0) if building else 0
        return instance_summary(summary_row(instance), done)


class InstanceDetailSerializer(InstanceSerializer):
    actions = ActionSerializer(many=True, read_only=True)

    class Meta(InstanceSerializer.Meta):
        fields = [*InstanceSerializer.Meta.fields, "user_data", "actions"]

    def to_representation(self, instance) -> dict:
        return {
            **super().to_representation(instance),
            "user_data": instance.user_data,
            "actions": ActionSerializer(instance.actions.all(), many=True).data,
        }


class SizeInputMixin(serializers.Serializer):
    flavor = serializers.UUIDField(required=False, allow_null=True)
    vcpus = serializers.IntegerField(required=False, min_value=1, max_value=1024)
    memory_mb = serializers.IntegerField(required=False, min_value=1, max_value=16 * 1024 * 1024)
    disk_gb = serializers.IntegerField(required=False, min_value=1, max_value=1024 * 1024)
    bandwidth_mbit = serializers.IntegerField(required=False, min_value=1, max_value=100000)
    traffic_gb = serializers.IntegerField(required=False, min_value=0, max_value=10**7)

    CUSTOM = ("vcpus", "memory_mb", "disk_gb", "bandwidth_mbit", "traffic_gb")

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
            try:
                flavor = services.resolve_flavor(attrs["flavor"])
            except services.InvalidRequest as exc:
                raise serializers.ValidationError({exc.field: [exc.message]}) from None
            attrs["size"] = Size.of_flavor(flavor)
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


class InstanceCreatedSerializer(InstanceSerializer):
    """The instance as accepted, with the password made up for it (shown this once)."""

    password = serializers.CharField(
        read_only=True, allow_null=True, help_text="Only with generate_password: the default user's password."
    )

    class Meta(InstanceSerializer.Meta):
        fields = [*InstanceSerializer.Meta.fields, "password"]


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


# -- rename and tags: writes the API and the UI share ----------------------------------------------
TAG_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,31}")
MAX_TAGS = 10
NAME_TAKEN = "An instance with this name already exists in this tenant."


def instance_rename(*, actor, instance: Instance, name: str) -> Instance:
    """Give a live instance another name, unique among the tenant's live instances."""
    name = name.strip()
    if not name or "\x00" in name or len(name) > 255:
        raise services.InvalidRequest("name", "Give a name of 1 to 255 characters.")
    try:
        with transaction.atomic():
            locked = lock_instance(instance.pk)
            if locked.state == InstanceState.DELETED:
                raise services.InvalidRequest("name", "A deleted instance cannot be renamed.")
            if locked.name == name:
                return locked
            live = Instance.objects.filter(tenant=locked.tenant_id).exclude(state=InstanceState.DELETED)
            if live.filter(name=name).exclude(pk=locked.pk).exists():
                raise services.InvalidRequest("name", NAME_TAKEN)
            previous, locked.name = locked.name, name
            locked.save(update_fields=["name"])
            audit(actor, "instance.rename", target=str(locked.pk), name=name, previous=previous)
    except IntegrityError:  # a create or rename that took the name meanwhile
        raise services.InvalidRequest("name", NAME_TAKEN) from None
    return locked


def instance_set_tags(*, actor, instance: Instance, tags: list[str]) -> list[str]:
    """Replace the instance's tags: up to MAX_TAGS, each lower case letters, digits and - _ . :"""
    wanted = sorted({tag.strip().lower() for tag in tags if tag.strip()})
    for tag in wanted:
        if not TAG_PATTERN.fullmatch(tag):
            raise services.InvalidRequest(
                "tags", f"A tag is 1 to 32 letters, digits, '-', '_', '.' or ':' (not {tag[:40]!r})."
            )
    if len(wanted) > MAX_TAGS:
        raise services.InvalidRequest("tags", f"At most {MAX_TAGS} tags.")
    with transaction.atomic():
        locked = lock_instance(instance.pk)
        current = set(locked.tags.values_list("name", flat=True))
        if current == set(wanted):
            return wanted
        locked.tags.exclude(name__in=wanted).delete()
        InstanceTag.objects.bulk_create([InstanceTag(instance=locked, name=t) for t in wanted if t not in current])
        audit(actor, "instance.tags", target=str(locked.pk), name=locked.name, tags=wanted)
    return wanted


def _invalid(exc: services.InvalidRequest):
    return serializers.ValidationError({exc.field: [exc.message]})


class InstanceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Virtual machines of the tenant. Writes answer 202: the work happens on the host."""

    queryset = Instance.objects.select_related("image", "flavor", "host")
    serializer_class = InstanceSerializer

    def get_serializer_class(self):
        return InstanceDetailSerializer if self.action == "retrieve" else InstanceSerializer

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action == "retrieve":
            return queryset.prefetch_related("actions__user")
        if self.action != "list":
            return queryset
        # The order the instance_live_page index keeps; the id makes it total for paging.
        queryset = queryset.order_by("-created_at", "-id")
        params = self.request.query_params
        state = params.get("state")
        if state in InstanceState.values:
            queryset = queryset.filter(state=state)
        elif state is not None:  # empty too: the document lists the states
            raise serializers.ValidationError({"state": [f"Unknown state; one of {', '.join(InstanceState.values)}."]})
        else:
            queryset = queryset.exclude(state=InstanceState.DELETED)
        if name := params.get("name"):
            queryset = queryset.filter(name__icontains=reject_nul(name, "name")[:255])
        for field in ("image", "flavor"):
            if (value := params.get(field)) is not None:
                if not services._is_uuid(value):
                    raise serializers.ValidationError({field: ["Must be a valid UUID."]})
                queryset = queryset.filter(**{f"{field}_id": value})
        return queryset

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "cursor",
                str,
                description="Keyset paging: give it empty for the first page, then follow `next`. "
                "Such pages have no `count` and cost the same at any depth. A cursor not taken from "
                "a `next` or `previous` link is a 400 naming `cursor`.",
            ),
            OpenApiParameter(
                "state", str, enum=InstanceState.values, description="Only this state (default: all but deleted)."
            ),
            OpenApiParameter("name", str, description="Part of the name, any case."),
            OpenApiParameter("image", OpenApiTypes.UUID, description="Only instances of this image."),
            OpenApiParameter("flavor", OpenApiTypes.UUID, description="Only instances of this flavor."),
        ],
        responses=InstancePageSerializer,
    )
    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        if NewestFirstCursor.cursor_query_param in request.query_params:
            paginator = NewestFirstCursor()
            rows = paginator.paginate_queryset(queryset.values(*SUMMARY_COLUMNS), request, view=self)
            return paginator.get_paginated_response(self._summaries({row["id"]: row for row in rows}))
        # Page through ids only (an index-only scan), then read the page's rows: joining image
        # and flavor before OFFSET made deep pages read every row above them.
        ids = self.paginate_queryset(queryset.values_list("pk", flat=True))
        rows = {row["id"]: row for row in self.scope(Instance.objects.filter(pk__in=ids)).values(*SUMMARY_COLUMNS)}
        return self.get_paginated_response(self._summaries({pk: rows[pk] for pk in ids if pk in rows}))

    @staticmethod
    def _summaries(rows: dict) -> list[dict]:
        """The page's rows (id -> SUMMARY_COLUMNS, in page order) as the API shows them."""
        done = steps_done([pk for pk, row in rows.items() if row["state"] == InstanceState.BUILDING])
        return [instance_summary(row, done.get(pk, 0)) for pk, row in rows.items()]

    def retrieve(self, request, *args, **kwargs):
        return Response(InstanceDetailSerializer(self.get_object()).data)

    @extend_schema(
        request=InstanceCreateSerializer,
        responses={202: InstanceCreatedSerializer},
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                {"type": "string", "minLength": 1, "maxLength": 255},
                OpenApiParameter.HEADER,
                required=False,
                description="Send a create twice with one key: one instance (a 409 if the bodies differ).",
            )
        ],
    )
    def create(self, request):
        data = InstanceCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        key = request.headers.get("Idempotency-Key")
        if key is not None and not (0 < len(key) <= 255):
            raise serializers.ValidationError({"Idempotency-Key": ["Must be 1 to 255 characters."]})
        create = services.CreateRequest(
            name=v["name"],
            image_id=str(v["image"]),
            size=v["size"],
            flavor_id=str(v["flavor"]) if v.get("flavor") else None,
            ssh_key_ids=tuple(str(k) for k in v.get("ssh_key_ids", [])),
            user_data=v.get("user_data", ""),
            password=v.get("password", ""),
            generate_password=v["generate_password"],
        )
        try:
            instance = services.instance_create(actor=self.actor, request=create, idempotency_key=key)
        except services.InvalidRequest as exc:
            raise _invalid(exc) from None
        password = getattr(instance, "generated_password", None)
        instance = self.get_queryset().get(pk=instance.pk)
        body = {**InstanceSerializer(instance).data, "password": password}
        return Response(body, status=status.HTTP_202_ACCEPTED)

    def _accepted(self, instance):
        fresh = self.get_queryset().get(pk=instance.pk) if instance.state != InstanceState.DELETED else instance
        return Response(InstanceSerializer(fresh).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: InstanceSerializer})
    def destroy(self, request, pk=None):
        return self._accepted(services.instance_delete(actor=self.actor, instance=self.get_object()))

    @extend_schema(request=None, responses={202: InstanceSerializer})
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        EmptySerializer(data=request.data or {}).is_valid(raise_exception=True)
        return self._accepted(services.instance_start(actor=self.actor, instance=self.get_object()))

    @extend_schema(request=None, responses={202: InstanceSerializer})
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        EmptySerializer(data=request.data or {}).is_valid(raise_exception=True)
        return self._accepted(services.instance_stop(actor=self.actor, instance=self.get_object()))

    @extend_schema(request=None, responses={202: InstanceSerializer})
    @action(detail=True, methods=["post"])
    def reboot(self, request, pk=None):
        EmptySerializer(data=request.data or {}).is_valid(raise_exception=True)
        return self._accepted(services.instance_reboot(actor=self.actor, instance=self.get_object()))

    @extend_schema(request=ResizeSerializer, responses={202: InstanceSerializer})
    @action(detail=True, methods=["post"])
    def resize(self, request, pk=None):
        instance = self.get_object()
        data = ResizeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            instance = services.instance_resize(
                actor=self.actor,
                instance=instance,
                size=data.validated_data["size"],
                flavor_id=data.validated_data.get("flavor"),
            )
        except services.InvalidRequest as exc:
            raise _invalid(exc) from None
        return self._accepted(instance)

    @extend_schema(request=RebuildSerializer, responses={202: InstanceSerializer})
    @action(detail=True, methods=["post"])
    def rebuild(self, request, pk=None):
        instance = self.get_object()
        data = RebuildSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            instance = services.instance_rebuild(
                actor=self.actor, instance=instance, image_id=data.validated_data["image"]
            )
        except services.InvalidRequest as exc:
            raise _invalid(exc) from None
        return self._accepted(instance)

    @extend_schema(request=SnapshotSerializer, responses={202: ImageSerializer})
    @action(detail=True, methods=["post"])
    def snapshot(self, request, pk=None):
        instance = self.get_object()
        data = SnapshotSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        _instance, image = services.instance_snapshot(actor=self.actor, instance=instance, **data.validated_data)
        return Response(ImageSerializer(image).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=InstanceUpdateSerializer, responses={200: InstanceSerializer})
    def partial_update(self, request, pk=None):
        """Rename: a name used by another live instance of the tenant is a 400 naming `name`,
        as at create. The guest's hostname stays what it was built with."""
        instance = self.get_object()
        data = InstanceUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            instance_rename(actor=self.actor, instance=instance, name=data.validated_data["name"])
        except services.InvalidRequest as exc:
            raise _invalid(exc) from None
        return Response(InstanceSerializer(self.get_queryset().get(pk=instance.pk)).data)

    @extend_schema(request=None, responses={201: ConsoleSerializer})
    @action(detail=True, methods=["post"])
    def console(self, request, pk=None):
        """A fresh console: the page for a logged-in browser, and a single-use WebSocket URL
        (good for one connection within CONSOLE_TOKEN_TTL seconds) for any VNC client."""
        EmptySerializer(data=request.data or {}).is_valid(raise_exception=True)
        instance = self.get_object()
        token = console.mint_token(actor=self.actor, instance=instance)
        body = {
            "url": f"{settings.PORTAL_BASE_URL}{reverse('instance-console-page', args=[instance.pk])}",
            "websocket_url": console.websocket_url(token),
            "expires_in": settings.CONSOLE_TOKEN_TTL,
        }
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={202: InstanceSerializer})
    @action(detail=True, methods=["post"], url_path="detach-iso")
    def detach_iso(self, request, pk=None):
        """Take the install ISO out (a running guest sees the CD ejected); the disk boots from now on."""
        instance = self.get_object()
        EmptySerializer(data=request.data or {}).is_valid(raise_exception=True)
        return self._accepted(services.instance_detach_iso(actor=self.actor, instance=instance))

    @extend_schema(request=None, responses={202: InstanceSerializer})
    @action(detail=True, methods=["post"])
    def rescue(self, request, pk=None):
        """Boot the operator's rescue system with this instance's disk attached as the second disk
        (vdb), to repair a guest one cannot log in to; use the console. `unrescue` ends it."""
        instance = self.get_object()
        EmptySerializer(data=request.data or {}).is_valid(raise_exception=True)
        return self._accepted(services.instance_rescue(actor=self.actor, instance=instance))

    @extend_schema(request=None, responses={202: InstanceSerializer})
    @action(detail=True, methods=["post"])
    def unrescue(self, request, pk=None):
        """Leave rescue: the instance boots its own disk again."""
        instance = self.get_object()
        EmptySerializer(data=request.data or {}).is_valid(raise_exception=True)
        return self._accepted(services.instance_unrescue(actor=self.actor, instance=instance))

    @extend_schema(request=ResetPasswordSerializer, responses={200: PasswordResultSerializer})
    @action(detail=True, methods=["post"], url_path="reset-password")
    def reset_password(self, request, pk=None):
        """Set a user's password in the running guest through its guest agent (qemu-guest-agent).
        A guest with no agent answering gets a 409 saying so; rescue mode is the way in then."""
        instance = self.get_object()
        data = ResetPasswordSerializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        v = data.validated_data
        try:
            made_up = services.instance_reset_password(
                actor=self.actor, instance=instance, username=v["username"], password=v.get("password", "")
            )
        except services.InvalidRequest as exc:
            raise _invalid(exc) from None
        return Response({"username": v["username"], "password": made_up})

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "max_kib",
                {"type": "integer", "minimum": 1, "maximum": CONSOLE_LOG_KIB[1]},
                description=f"How much of the end of the log, in KiB (default {CONSOLE_LOG_KIB[0]}).",
            )
        ],
        responses={200: ConsoleLogSerializer},
    )
    @action(detail=True, methods=["get"], url_path="console-log")
    def console_log(self, request, pk=None):
        """The end of what the guest printed on its serial console, across its boots: for a
        guest that cannot reach the network. Read from the host through libvirt."""
        instance = self.get_object()
        raw = request.query_params.get("max_kib", str(CONSOLE_LOG_KIB[0]))
        if not re.fullmatch(r"[0-9]{1,7}", raw) or not 1 <= int(raw) <= CONSOLE_LOG_KIB[1]:
            raise serializers.ValidationError({"max_kib": [f"A whole number from 1 to {CONSOLE_LOG_KIB[1]}."]})
        data = services.console_log(instance=instance, max_bytes=int(raw) * 1024)
        return Response({"log": data.decode(errors="replace"), "size": len(data), "max_kib": int(raw)})


# -- operators ---------------------------------------------------------------------------------


class HostSerializer(serializers.ModelSerializer):
    capacity = serializers.SerializerMethodField()
    instances = serializers.IntegerField(source="live_instances", read_only=True, default=0)

    class Meta:
        model = Host
        fields = [
            "id",
            "name",
            "uri",
            "queue",
            "status",
            "vcpus_total",
            "memory_mb_total",
            "disk_gb_total",
            "cpu_ratio",
            "ram_ratio",
            "disk_ratio",
            "vcpus_used",
            "memory_mb_used",
            "disk_gb_used",
            "capacity",
            "storage_pool",
            "network",
            "vnc_listen",
            "shaping",
            "domain_type",
            "last_heartbeat",
            "orphans",
            "instances",
        ]
        read_only_fields = [
            "vcpus_total",
            "memory_mb_total",
            "disk_gb_total",
            "vcpus_used",
            "memory_mb_used",
            "disk_gb_used",
            "last_heartbeat",
            "orphans",
            "domain_type",
        ]

    def get_capacity(self, host) -> dict:
        return host.capacity()


class HostRegisterSerializer(StrictSerializer):
    name = serializers.SlugField(max_length=60)
    uri = serializers.CharField(max_length=300)
    queue = serializers.CharField(max_length=100, required=False)
    storage_pool = serializers.CharField(max_length=100, default="default")
    network = serializers.CharField(max_length=100, default="default")
    vnc_listen = serializers.IPAddressField(default="127.0.0.1")
    shaping = serializers.BooleanField(default=True)
    pool_first = serializers.IPAddressField(
        protocol="IPv4", required=False, help_text="First address of the portal's pool (default: the DHCP range's)."
    )
    pool_last = serializers.IPAddressField(
        protocol="IPv4", required=False, help_text="Last address of the portal's pool; keep dnsmasq's range apart."
    )

    def validate(self, attrs):
        if ("pool_first" in attrs) != ("pool_last" in attrs):
            raise serializers.ValidationError({"pool_last": ["Give pool_first and pool_last together."]})
        return attrs


class HostStatusSerializer(StrictSerializer):
    whole_on_patch = True  # the PATCH needs `status` (portal.openapi)

    status = serializers.ChoiceField(choices=Host.Status.choices)


class AdminHostViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Operators: hypervisor hosts. POST registers (and probes) a host; PATCH sets its status."""

    queryset = Host.objects.annotate(
        live_instances=Count("instances", filter=~Q(instances__state=InstanceState.DELETED))
    ).order_by("name")
    serializer_class = HostSerializer
    permission_classes = [IsStaff]

    @extend_schema(request=HostRegisterSerializer, responses={201: HostSerializer})
    def create(self, request):
        data = HostRegisterSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            host = host_services.host_register(allow_kvm=settings.ALLOW_KVM, **data.validated_data)
        except services.InvalidRequest as exc:
            raise _invalid(exc) from None
        except Exception as exc:  # the probe failed: the URI or names are wrong
            raise serializers.ValidationError({"uri": [f"Cannot use this host: {exc}"]}) from None
        return Response(HostSerializer(self.get_queryset().get(pk=host.pk)).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=HostStatusSerializer, responses=HostSerializer)
    def partial_update(self, request, pk=None):
        host = self.get_object()
        data = HostStatusSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        host_services.host_set_status(actor=None, host=host, status=data.validated_data["status"])
        return Response(HostSerializer(self.get_queryset().get(pk=host.pk)).data)


class ImportErrorSerializer(serializers.Serializer):
    field = serializers.CharField(help_text="The input to blame: url, sha256 or file.")
    message = serializers.CharField()


class AdminImageSerializer(RejectUnknownFields, serializers.ModelSerializer):
    progress = serializers.SerializerMethodField(
        help_text="Percent of a URL import downloaded so far; null while its size is unknown."
    )
    error = serializers.SerializerMethodField(help_text="Why an import was refused (state error).")

    class Meta:
        model = Image
        fields = [
            *ImageSerializer.Meta.fields,
            "source_path",
            "tenant",
            "host",
            "source_url",
            "progress",
            "progress_bytes",
            "expected_bytes",
            "error",
        ]
        read_only_fields = ["tenant", "host", "state", "source_url", "progress_bytes", "expected_bytes"]

    def get_progress(self, image) -> int | None:
        if image.state == Image.State.ACTIVE:
            return 100
        if not image.expected_bytes:
            return None
        return min(100, image.progress_bytes * 100 // image.expected_bytes)

    @extend_schema_field(ImportErrorSerializer(allow_null=True))
    def get_error(self, image) -> dict | None:
        if not image.error_field:
            return None
        return {"field": image.error_field, "message": image.error_message}


def _image_name(value: str) -> str:
    if not value.isprintable():
        raise serializers.ValidationError("No control characters.")
    return value


class ImageMetadataSerializer(serializers.Serializer):
    """What an operator says about an image being imported; the checks find out the rest."""

    name = serializers.CharField(max_length=100, validators=[_image_name])
    os_family = serializers.RegexField(
        r"^[a-z0-9][a-z0-9._-]*$",
        max_length=40,
        help_text="Lower case: the create page groups images by it (debian, ubuntu, alma, ...).",
    )
    os_version = serializers.RegexField(
        r"^[A-Za-z0-9][A-Za-z0-9. _-]*$", max_length=40, required=False, default="", help_text="e.g. 12 or 24.04"
    )
    min_memory_mb = serializers.IntegerField(min_value=32, max_value=1024 * 1024, default=512)


class ImageImportSerializer(StrictSerializer, ImageMetadataSerializer):
    url = serializers.URLField(max_length=2000, help_text="http:// or https://, downloaded by a worker.")
    sha256 = serializers.RegexField(
        images.SHA256.pattern, help_text="The image's SHA-256 (64 hex digits, optionally after 'sha256:')."
    )


class ImageUploadSerializer(RejectUnknownFields, ImageMetadataSerializer):
    def to_internal_value(self, data):
        # Form fields are strings: unknown ones are refused, but JSON's types do not apply.
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return serializers.Serializer.to_internal_value(self, data)

    file = serializers.FileField(help_text="The image file (qcow2 or raw), streamed to the image store.")
    sha256 = serializers.RegexField(
        images.SHA256.pattern, required=False, help_text="If given, the upload must have this SHA-256."
    )


def _refused(exc: images.ImportRefused):
    return serializers.ValidationError({exc.field: [exc.message]})


class AdminImageViewSet(viewsets.ModelViewSet):
    """Operators: public images from the portal's image store. Import one by upload
    (`upload`, multipart) or from a URL (`import`, downloaded by a worker; follow its progress
    on the image). DELETE retires an image and, once no instance uses it, removes its volumes
    from every host and its file from the store."""

    queryset = Image.objects.filter(visibility=Image.Visibility.PUBLIC).exclude(state=Image.State.DELETED)
    serializer_class = AdminImageSerializer
    permission_classes = [IsStaff]
    upload_handler: images.UploadHandler | None = None

    def initialize_request(self, request, *args, **kwargs):
        drf_request = super().initialize_request(request, *args, **kwargs)
        if self.action == "upload":
            # Before anything reads the body: the CSRF check of a session parses it.
            self.upload_handler = images.UploadHandler(request)
            request.upload_handlers = [self.upload_handler]
        return drf_request

    def dispatch(self, request, *args, **kwargs):
        self.upload_handler = None
        try:
            return super().dispatch(request, *args, **kwargs)
        finally:
            if self.upload_handler is not None:
                self.upload_handler.discard()  # whatever no import took: refused, cut, or denied

    def perform_destroy(self, image):
        host_services.image_delete(actor=actor_for_request(self.request), image=image)

    @extend_schema(request=ImageImportSerializer, responses={202: AdminImageSerializer})
    @action(detail=False, methods=["post"], url_path="import")
    def import_url(self, request):
        """Import an image from an http(s) URL: 202 with the image pending; a worker downloads
        it (IMAGE_MAX_BYTES at most), checks its SHA-256 and format, and makes it active, or
        puts it in error with `error` naming the field to blame and leaves no file."""
        data = ImageImportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            image = images.start_url_import(actor=actor_for_request(request), **data.validated_data)
        except images.ImportRefused as exc:
            raise _refused(exc) from None
        return Response(AdminImageSerializer(image).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request={"multipart/form-data": ImageUploadSerializer}, responses={201: AdminImageSerializer})
    @action(detail=False, methods=["post"], parser_classes=[MultiPartParser])
    def upload(self, request):
        """Import an image by upload (multipart, the file in `file`), checked before it is kept:
        qcow2 or raw, no backing or external data file, IMAGE_MAX_BYTES at most, and the SHA-256
        if given. A refusal is a 400 naming the field and leaves no file and no image."""
        announced = request.META.get("CONTENT_LENGTH", "")
        if announced.isdigit() and int(announced) > images.max_bytes() + UPLOAD_FORM_SLACK:
            raise _refused(images.ImportRefused("file", images.too_large()))
        body = request.data  # streams the file part into the store's staging folder
        refusal = self.upload_handler.outcome()
        if refusal is not None:
            raise _refused(refusal)
        data = ImageUploadSerializer(data=body)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        staged = fields.pop("file").staged
        try:
            fields["sha256"] = images.parse_sha256(fields.get("sha256"))
            image = images.import_upload(actor=actor_for_request(request), staged=staged, **fields)
        except images.ImportRefused as exc:
            raise _refused(exc) from None
        return Response(AdminImageSerializer(image).data, status=status.HTTP_201_CREATED)


class AdminFlavorSerializer(RejectUnknownFields, serializers.ModelSerializer):
    class Meta:
        model = Flavor
        fields = [*FlavorSerializer.Meta.fields, "active"]


class AdminFlavorViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Operators: the flavor catalogue. A flavor in use only changes `active`."""

    queryset = Flavor.objects.all()
    serializer_class = AdminFlavorSerializer
    permission_classes = [IsStaff]

    def perform_update(self, serializer):
        try:
            serializer.save()
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"flavor": exc.messages}) from None
