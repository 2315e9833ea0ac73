"""Operators' routes: hosts, instances on them (migration), public images (upload and URL
import) and flavors."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count, Q
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from compute import consolidation, images, migration
from compute import hosts as host_services
from compute.models import Flavor, Host, Image, Instance, InstanceState
from portal.api.compute.catalogue import FlavorSerializer, ImageSerializer
from portal.api.compute.presenters import InstanceDetailSerializer
from portal.api.inputs import RejectUnknownFields, StrictSerializer
from portal.api.permissions import IsStaff
from tenants.access import actor_for_request, get_or_404, operator_actor

# An upload's form fields and part headers around the image file itself.
UPLOAD_FORM_SLACK = 64 * 1024


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
            "shared_pool",
            "network",
            "vnc_listen",
            "shaping",
            "domain_type",
            "last_heartbeat",
            "orphans",
            "instances",
        ]
        read_only_fields = [
            "shared_pool",
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
    segment = serializers.SlugField(
        max_length=60,
        required=False,
        default="",
        allow_blank=True,
        help_text="Hosts of one segment share an L2 network and its addresses (instances keep theirs when moved).",
    )
    shared_pool = serializers.CharField(
        max_length=100,
        required=False,
        default="",
        allow_blank=True,
        help_text="A storage pool on storage all hosts of the segment mount at one path (NFS): HA instances' disks.",
    )
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


class MovedSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    state = serializers.CharField()
    reason = serializers.CharField(required=False, help_text="Why it waits.")


class DrainSerializer(serializers.Serializer):
    moving = MovedSerializer(many=True, help_text="Instances whose migration began.")
    waiting = MovedSerializer(many=True, help_text="Instances that cannot move now; drain again later.")


class EmptySerializer(StrictSerializer):
    pass


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
        host = host_services.host_register(allow_kvm=settings.ALLOW_KVM, **data.validated_data)
        return Response(HostSerializer(self.get_queryset().get(pk=host.pk)).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={202: DrainSerializer})
    @action(detail=True, methods=["post"])
    def drain(self, request, pk=None):
        """Maintenance: no new instances here, and every instance moves off (live where it runs,
        between hosts of its segment; cold where it is stopped). Ask again for what waited."""
        host = self.get_object()
        EmptySerializer(data=request.data or {}).is_valid(raise_exception=True)
        result = migration.host_drain(actor=operator_actor(request.user), host=host)
        return Response(result, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses=HostSerializer)
    @action(detail=True, methods=["post"])
    def undrain(self, request, pk=None):
        """Back in service: the host takes new instances again."""
        host = self.get_object()
        EmptySerializer(data=request.data or {}).is_valid(raise_exception=True)
        host_services.host_set_status(actor=operator_actor(request.user), host=host, status=Host.Status.UP)
        return Response(HostSerializer(self.get_queryset().get(pk=host.pk)).data)

    @extend_schema(request=HostStatusSerializer, responses=HostSerializer)
    def partial_update(self, request, pk=None):
        host = self.get_object()
        data = HostStatusSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        host_services.host_set_status(actor=None, host=host, status=data.validated_data["status"])
        return Response(HostSerializer(self.get_queryset().get(pk=host.pk)).data)


class AdminInstanceSerializer(InstanceDetailSerializer):
    host_name = serializers.CharField(source="host.name", read_only=True, help_text="The host it is on.")

    class Meta(InstanceDetailSerializer.Meta):
        fields = [*InstanceDetailSerializer.Meta.fields, "host_name"]

    def to_representation(self, instance) -> dict:
        return {**super().to_representation(instance), "host_name": instance.host.name}


class MigrateSerializer(StrictSerializer):
    host = serializers.UUIDField(
        required=False, allow_null=True, help_text="The host to move to; without it, the scheduler picks one."
    )


class AdminInstanceViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Operators: any tenant's instance, with the host it is on; moving it to another host."""

    queryset = Instance.objects.select_related("image", "flavor", "host", "tenant").prefetch_related(
        "actions__user", "security_groups"
    )
    serializer_class = AdminInstanceSerializer
    permission_classes = [IsStaff]

    def get_object(self):
        return get_or_404(self.get_queryset(), self.kwargs["pk"])

    @extend_schema(request=MigrateSerializer, responses={202: AdminInstanceSerializer})
    @action(detail=True, methods=["post"])
    def migrate(self, request, pk=None):
        """Cold migration: a stopped instance moves to another host, its disk streamed between
        the pools; follow it in `actions`. A 409 when it is not stopped or no host has room."""
        instance = self.get_object()
        data = MigrateSerializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        host = data.validated_data.get("host")
        migration.instance_migrate(
            actor=operator_actor(request.user, instance.tenant),
            instance=instance,
            host_id=str(host) if host else None,
        )
        fresh = self.get_queryset().get(pk=instance.pk)
        return Response(AdminInstanceSerializer(fresh).data, status=status.HTTP_202_ACCEPTED)


class MoveSerializer(serializers.Serializer):
    instance = serializers.UUIDField()
    name = serializers.CharField()
    source = serializers.CharField(help_text="The host it leaves.")
    target = serializers.UUIDField(help_text="The host it moves to.")
    target_name = serializers.CharField()
    live = serializers.BooleanField(help_text="Moved while it runs (else stopped, cold).")


class PlanSerializer(serializers.Serializer):
    moves = MoveSerializer(many=True)
    emptied = serializers.ListField(child=serializers.CharField(), help_text="Hosts left empty, to power down.")
    hosts_in_use_before = serializers.IntegerField()
    hosts_in_use_after = serializers.IntegerField()
    token = serializers.CharField(help_text="Send it back to carry out exactly this plan.")


class ApproveSerializer(StrictSerializer):
    token = serializers.CharField(max_length=500)


class OutcomeSerializer(serializers.Serializer):
    instance = serializers.UUIDField()
    started = serializers.BooleanField()
    reason = serializers.CharField(allow_blank=True)


class AppliedSerializer(serializers.Serializer):
    plan = PlanSerializer()
    outcomes = OutcomeSerializer(many=True)


def _plan_body(plan: consolidation.Plan) -> dict:
    return {
        "moves": [move.__dict__ for move in plan.moves],
        "emptied": plan.emptied,
        "hosts_in_use_before": plan.hosts_in_use_before,
        "hosts_in_use_after": plan.hosts_in_use_after,
        "token": plan.token(),
    }


class ConsolidationView(APIView):
    """Operators: a plan that packs instances onto fewer hosts within their overcommit, leaving
    whole hosts empty (to power down); POST its token to carry it out."""

    permission_classes = [IsStaff]

    @extend_schema(responses=PlanSerializer)
    def get(self, request):
        return Response(_plan_body(consolidation.plan()))

    @extend_schema(request=ApproveSerializer, responses={202: AppliedSerializer})
    def post(self, request):
        data = ApproveSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        plan, outcomes = consolidation.apply(actor=operator_actor(request.user), token=data.validated_data["token"])
        return Response({"plan": _plan_body(plan), "outcomes": outcomes}, status=status.HTTP_202_ACCEPTED)


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
        image = images.start_url_import(actor=actor_for_request(request), **data.validated_data)
        return Response(AdminImageSerializer(image).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request={"multipart/form-data": ImageUploadSerializer}, responses={201: AdminImageSerializer})
    @action(detail=False, methods=["post"], parser_classes=[MultiPartParser])
    def upload(self, request):
        """Import an image by upload (multipart, the file in `file`), checked before it is kept:
        qcow2 or raw, no backing or external data file, IMAGE_MAX_BYTES at most, and the SHA-256
        if given. A refusal is a 400 naming the field and leaves no file and no image."""
        announced = request.META.get("CONTENT_LENGTH", "")
        if announced.isdigit() and int(announced) > images.max_bytes() + UPLOAD_FORM_SLACK:
            raise images.ImportRefused("file", images.too_large())
        body = request.data  # streams the file part into the store's staging folder
        refusal = self.upload_handler.outcome()
        if refusal is not None:
            raise refusal
        data = ImageUploadSerializer(data=body)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        staged = fields.pop("file").staged
        fields["sha256"] = images.parse_sha256(fields.get("sha256"))
        image = images.import_upload(actor=actor_for_request(request), staged=staged, **fields)
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
