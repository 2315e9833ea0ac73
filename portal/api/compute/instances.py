"""Routes of a tenant's instances: list, create, power, resize, rebuild, snapshot, console, rescue."""

from __future__ import annotations

import re

from django.conf import settings
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer, extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from compute import console, progress, security_groups, services
from compute.models import Instance, InstanceState
from portal.api.compute.catalogue import ImageSerializer
from portal.api.compute.firewall import MembershipSerializer
from portal.api.compute.instance_pages import InstancePageSource, ListFilters
from portal.api.compute.presenters import (
    SUMMARY_COLUMNS,
    InstanceDetailSerializer,
    InstanceSerializer,
    instance_summary,
)
from portal.api.compute.serializers import (
    CONSOLE_LOG_KIB,
    ConsoleLogSerializer,
    ConsoleSerializer,
    EmptySerializer,
    InstanceCreatedSerializer,
    InstanceCreateSerializer,
    InstancePageSerializer,
    InstancesCreatedSerializer,
    InstanceUpdateSerializer,
    PasswordResultSerializer,
    RebuildSerializer,
    ResetPasswordSerializer,
    ResizeSerializer,
    SnapshotSerializer,
)
from portal.api.inputs import reject_nul
from portal.api.paging import NewestFirstCursor
from portal.api.viewsets import TenantScopedViewSet
from tenants.access import scoped_tenant_id


class InstanceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Virtual machines of the tenant. Writes answer 202: the work happens on the host."""

    queryset = Instance.objects.select_related("image", "flavor", "host", "tenant")
    serializer_class = InstanceSerializer

    def get_serializer_class(self):
        return InstanceDetailSerializer if self.action == "retrieve" else InstanceSerializer

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action == "retrieve":
            return queryset.prefetch_related("actions__user", "security_groups")
        if self.action != "list":
            return queryset
        # The order the instance_live_page index keeps; the id makes it total for paging.
        queryset = queryset.order_by("-created_at", "-id")
        filters = self.list_filters()
        if filters.state is not None:
            queryset = queryset.filter(state=filters.state)
        else:
            queryset = queryset.exclude(state=InstanceState.DELETED)
        if filters.name:
            queryset = queryset.filter(name__icontains=filters.name)
        for field in ("image", "flavor"):
            if (value := getattr(filters, field)) is not None:
                queryset = queryset.filter(**{f"{field}_id": value})
        return queryset

    def list_filters(self) -> ListFilters:
        """The list's query parameters, checked: a 400 naming the one that is wrong."""
        params = self.request.query_params
        state = params.get("state")
        if state is not None and state not in InstanceState.values:  # empty too: the document lists them
            raise serializers.ValidationError({"state": [f"Unknown state; one of {', '.join(InstanceState.values)}."]})
        name = params.get("name")
        name = reject_nul(name, "name")[:255] if name else None
        ids = {}
        for field in ("image", "flavor"):
            if (value := params.get(field)) is not None and not services._is_uuid(value):
                raise serializers.ValidationError({field: ["Must be a valid UUID."]})
            ids[field] = value
        return ListFilters(state=state, name=name, **ids)

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
        if NewestFirstCursor.cursor_query_param in request.query_params:
            # The lean read path (instance_pages): the same rows, pages and cursors.
            paginator = NewestFirstCursor()
            source = InstancePageSource(scoped_tenant_id(self.actor), self.list_filters())
            rows = paginator.paginate_queryset(source, request, view=self)
            return paginator.get_paginated_response(self._summaries({row["id"]: row for row in rows}))
        queryset = self.filter_queryset(self.get_queryset())
        # Page through ids only (an index-only scan), then read the page's rows: joining image
        # and flavor before OFFSET made deep pages read every row above them.
        ids = self.paginate_queryset(queryset.values_list("pk", flat=True))
        rows = {row["id"]: row for row in self.scope(Instance.objects.filter(pk__in=ids)).values(*SUMMARY_COLUMNS)}
        return self.get_paginated_response(self._summaries({pk: rows[pk] for pk in ids if pk in rows}))

    @staticmethod
    def _summaries(rows: dict) -> list[dict]:
        """The page's rows (id -> SUMMARY_COLUMNS, in page order) as the API shows them."""
        done = progress.steps_done([pk for pk, row in rows.items() if row["state"] == InstanceState.BUILDING])
        return [instance_summary(row, done.get(pk, 0)) for pk, row in rows.items()]

    def retrieve(self, request, *args, **kwargs):
        return Response(InstanceDetailSerializer(self.get_object()).data)

    @extend_schema(
        request=InstanceCreateSerializer,
        responses={
            202: PolymorphicProxySerializer(
                component_name="InstanceCreateResult",
                serializers=[InstanceCreatedSerializer, InstancesCreatedSerializer],
                resource_type_field_name=None,
            )
        },
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                {"type": "string", "minLength": 1, "maxLength": 255},
                OpenApiParameter.HEADER,
                required=False,
                description="Send a create twice with one key: the same instance, or the same instances "
                "of a bulk create (a 409 if the bodies differ).",
            )
        ],
    )
    def create(self, request):
        """One instance; with `count`, that many, all or none, answered as `{"instances": [...]}`."""
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
            flavor=v.get("flavor_row"),
            ssh_key_ids=tuple(str(k) for k in v.get("ssh_key_ids", [])),
            user_data=v.get("user_data", ""),
            password=v.get("password", ""),
            generate_password=v["generate_password"],
            security_group_ids=tuple(str(g) for g in v["security_group_ids"]) if "security_group_ids" in v else None,
        )
        if "count" not in v:
            instance = services.instance_create(actor=self.actor, request=create, idempotency_key=key)
            return Response(self._created([instance])[0], status=status.HTTP_202_ACCEPTED)
        made = services.instances_create(actor=self.actor, request=create, count=v["count"], idempotency_key=key)
        return Response({"instances": self._created(made)}, status=status.HTTP_202_ACCEPTED)

    @staticmethod
    def _created(made: list) -> list[dict]:
        """The instances as accepted, each with the password made up for it (first answer only).
        A new instance is shown as the create wrote it (its image, flavor, host and tenant
        came with it), without reading it back."""
        return [{**InstanceSerializer(i).data, "password": getattr(i, "generated_password", None)} for i in made]

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
        instance = services.instance_resize(
            actor=self.actor,
            instance=instance,
            size=data.validated_data["size"],
            flavor_id=data.validated_data.get("flavor"),
        )
        return self._accepted(instance)

    @extend_schema(request=RebuildSerializer, responses={202: InstanceSerializer})
    @action(detail=True, methods=["post"])
    def rebuild(self, request, pk=None):
        instance = self.get_object()
        data = RebuildSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        instance = services.instance_rebuild(actor=self.actor, instance=instance, image_id=data.validated_data["image"])
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
        services.instance_rename(actor=self.actor, instance=instance, name=data.validated_data["name"])
        return Response(InstanceSerializer(self.get_queryset().get(pk=instance.pk)).data)

    @extend_schema(request=MembershipSerializer, responses={200: InstanceDetailSerializer})
    @action(detail=True, methods=["put"], url_path="security-groups")
    def security_groups(self, request, pk=None):
        """Set the security groups the instance is a member of (attach and detach in one); a
        running guest has the new rules within seconds, without a reboot."""
        instance = self.get_object()
        data = MembershipSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        wanted = [str(g) for g in data.validated_data["security_group_ids"]]
        security_groups.instance_set_groups(actor=self.actor, instance=instance, group_ids=wanted)
        return Response(InstanceDetailSerializer(self.get_queryset().get(pk=instance.pk)).data)

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
        made_up = services.instance_reset_password(
            actor=self.actor, instance=instance, username=v["username"], password=v.get("password", "")
        )
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
