from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count, Q
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from compute import console, services
from compute import hosts as host_services
from compute.models import Flavor, Host, Image, Instance, InstanceAction, InstanceState
from compute.operations import PROVISION_STEPS
from compute.selectors import images_visible_filter
from compute.sizing import Size, custom_size, custom_size_errors
from compute.transitions import allowed_actions
from portal.api import RejectUnknownFields, StrictSerializer, reject_nul
from portal.viewsets import TenantScopedViewSet
from tenants.permissions import IsStaff

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


class SizeSerializer(serializers.Serializer):
    vcpus = serializers.IntegerField()
    memory_mb = serializers.IntegerField()
    disk_gb = serializers.IntegerField()
    bandwidth_mbit = serializers.IntegerField()
    traffic_gb = serializers.IntegerField()
    sla_percent = serializers.DecimalField(max_digits=6, decimal_places=3)


class ActionSerializer(serializers.ModelSerializer):
    user = serializers.EmailField(source="user.email", default=None, read_only=True)

    class Meta:
        model = InstanceAction
        fields = ["action", "step", "status", "user", "started_at", "duration_ms", "error"]


class InstanceSerializer(serializers.ModelSerializer):
    image_name = serializers.CharField(source="image.name", read_only=True)
    flavor_name = serializers.CharField(source="flavor.name", default=None, read_only=True)
    size = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    allowed_actions = serializers.SerializerMethodField()

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
            "allowed_actions",
            "error",
            "created_at",
            "launched_at",
            "deleted_at",
        ]

    def get_size(self, instance) -> dict:
        size = Size.of_instance(instance)
        return {**size.as_fields(), "sla_percent": f"{size.sla_percent:.3f}"}

    def get_progress(self, instance) -> int:
        if instance.state != InstanceState.BUILDING:
            return 0 if instance.state == InstanceState.ERROR and not instance.launched_at else 100
        done = getattr(instance, "steps_done", 0) or 0
        return int(100 * done / (len(PROVISION_STEPS) + 1))

    def get_error(self, instance) -> dict | None:
        if not instance.error_message:
            return None
        return {"step": instance.error_step, "message": instance.error_message}

    def get_allowed_actions(self, instance) -> list[str]:
        return allowed_actions(instance.state)


class InstanceDetailSerializer(InstanceSerializer):
    actions = ActionSerializer(many=True, read_only=True)

    class Meta(InstanceSerializer.Meta):
        fields = [*InstanceSerializer.Meta.fields, "user_data", "actions"]


class SizeInputMixin(serializers.Serializer):
    flavor = serializers.UUIDField(required=False, allow_null=True)
    vcpus = serializers.IntegerField(required=False, min_value=1, max_value=1024)
    memory_mb = serializers.IntegerField(required=False, min_value=1, max_value=16 * 1024 * 1024)
    disk_gb = serializers.IntegerField(required=False, min_value=1, max_value=1024 * 1024)
    bandwidth_mbit = serializers.IntegerField(required=False, min_value=1, max_value=100000)
    traffic_gb = serializers.IntegerField(required=False, min_value=0, max_value=10**7)

    CUSTOM = ("vcpus", "memory_mb", "disk_gb", "bandwidth_mbit", "traffic_gb")

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


def with_progress(instances: list) -> list:
    """Attach `steps_done` to the building ones, in one query for the whole page: a per-row
    subquery made every list request count steps for all rows up to the page's end."""
    building = [i.pk for i in instances if i.state == InstanceState.BUILDING]
    done = {}
    if building:
        done = dict(
            InstanceAction.objects.filter(
                instance_id__in=building,
                action__in=["create", "retry"],
                status=InstanceAction.Status.DONE,
                step__in=PROVISION_STEPS,
            )
            .values("instance_id")
            .annotate(n=Count("step", distinct=True))
            .values_list("instance_id", "n")
        )
    for instance in instances:
        instance.steps_done = done.get(instance.pk, 0)
    return instances


def _invalid(exc: services.InvalidRequest):
    return serializers.ValidationError({exc.field: [exc.message]})


class InstanceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Virtual machines of the tenant. Writes answer 202: the work happens on the host."""

    queryset = Instance.objects.select_related("image", "flavor")
    serializer_class = InstanceSerializer

    def get_serializer_class(self):
        return InstanceDetailSerializer if self.action == "retrieve" else InstanceSerializer

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action == "retrieve":
            return queryset.prefetch_related("actions__user")
        if self.action != "list":
            return queryset
        # The list never shows these; they can be large.
        queryset = queryset.defer("user_data", "ssh_keys", "pending")
        params = self.request.query_params
        state = params.get("state")
        if state in InstanceState.values:
            queryset = queryset.filter(state=state)
        elif state:
            raise serializers.ValidationError({"state": [f"Unknown state; one of {', '.join(InstanceState.values)}."]})
        else:
            queryset = queryset.exclude(state=InstanceState.DELETED)
        if name := params.get("name"):
            queryset = queryset.filter(name__icontains=reject_nul(name, "name")[:255])
        for field in ("image", "flavor"):
            if value := params.get(field):
                if not services._is_uuid(value):
                    raise serializers.ValidationError({field: ["Must be a valid UUID."]})
                queryset = queryset.filter(**{f"{field}_id": value})
        return queryset

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(InstanceSerializer(with_progress(page), many=True).data)

    def retrieve(self, request, *args, **kwargs):
        return Response(InstanceDetailSerializer(with_progress([self.get_object()])[0]).data)

    @extend_schema(
        request=InstanceCreateSerializer,
        responses={202: InstanceSerializer},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False)],
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
        )
        try:
            instance = services.instance_create(actor=self.actor, request=create, idempotency_key=key)
        except services.InvalidRequest as exc:
            raise _invalid(exc) from None
        instance = with_progress([self.get_queryset().get(pk=instance.pk)])[0]
        return Response(InstanceSerializer(instance).data, status=status.HTTP_202_ACCEPTED)

    def _accepted(self, instance):
        fresh = self.get_queryset().get(pk=instance.pk) if instance.state != InstanceState.DELETED else instance
        fresh = with_progress([fresh])[0]
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


class HostStatusSerializer(StrictSerializer):
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
            host = host_services.host_register(**data.validated_data)
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


class AdminImageSerializer(RejectUnknownFields, serializers.ModelSerializer):
    class Meta:
        model = Image
        fields = [*ImageSerializer.Meta.fields, "source_path", "tenant", "host"]
        read_only_fields = ["tenant", "host", "state"]


class AdminImageViewSet(viewsets.ModelViewSet):
    """Operators: public images from the portal's image store."""

    queryset = Image.objects.filter(visibility=Image.Visibility.PUBLIC)
    serializer_class = AdminImageSerializer
    permission_classes = [IsStaff]

    def perform_destroy(self, image):
        Image.objects.filter(pk=image.pk).update(state=Image.State.DELETED)


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
