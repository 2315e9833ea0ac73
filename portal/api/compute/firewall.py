"""Routes of a tenant's security groups and their rules (compute.security_groups)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.response import Response

from compute import security_groups
from compute.models import SecurityGroup, SecurityGroupRule
from portal.api.inputs import StrictSerializer
from portal.api.viewsets import TenantScopedViewSet

R = SecurityGroupRule


class RuleSerializer(serializers.ModelSerializer):
    remote_group_id = serializers.UUIDField(allow_null=True, read_only=True)

    class Meta:
        model = SecurityGroupRule
        fields = ["id", "direction", "protocol", "port_min", "port_max", "cidr", "remote_group_id", "description"]


class SecurityGroupSerializer(serializers.ModelSerializer):
    rules = RuleSerializer(many=True, read_only=True)
    instance_count = serializers.SerializerMethodField()

    class Meta:
        model = SecurityGroup
        fields = ["id", "name", "description", "is_default", "rules", "instance_count", "created_at"]

    def get_instance_count(self, group) -> int:
        return group.instances.exclude(state="deleted").count()


class RuleInputSerializer(StrictSerializer):
    direction = serializers.ChoiceField(choices=R.Direction.choices)
    protocol = serializers.ChoiceField(choices=R.Protocol.choices)
    port_min = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=65535)
    port_max = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=65535)
    cidr = serializers.CharField(
        required=False, allow_blank=True, max_length=43, help_text="The other end, e.g. 0.0.0.0/0 (the default)."
    )
    remote_group_id = serializers.UUIDField(
        required=False, allow_null=True, help_text="Instead of a CIDR: the members of this group of the tenant."
    )
    description = serializers.CharField(required=False, allow_blank=True, max_length=200)

    def request(self) -> security_groups.RuleRequest:
        v = self.validated_data
        remote = v.get("remote_group_id")
        return security_groups.RuleRequest(
            direction=v["direction"],
            protocol=v["protocol"],
            port_min=v.get("port_min"),
            port_max=v.get("port_max"),
            cidr=v.get("cidr", ""),
            remote_group_id=str(remote) if remote else None,
            description=v.get("description", ""),
        )


class GroupCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=64)
    description = serializers.CharField(required=False, allow_blank=True, max_length=200)
    rules = RuleInputSerializer(many=True, required=False)


class GroupUpdateSerializer(StrictSerializer):
    name = serializers.CharField(required=False, max_length=64)
    description = serializers.CharField(required=False, allow_blank=True, max_length=200)


class SecurityGroupViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, TenantScopedViewSet
):
    """Firewall groups: an instance receives and sends only what the rules of its groups allow.
    A change reaches running instances within seconds, without a reboot."""

    queryset = SecurityGroup.objects.prefetch_related("rules")
    serializer_class = SecurityGroupSerializer

    def list(self, request, *args, **kwargs):
        security_groups.default_group(self.actor.tenant)  # every tenant has one to show
        return super().list(request, *args, **kwargs)

    @extend_schema(request=GroupCreateSerializer, responses={201: SecurityGroupSerializer})
    def create(self, request):
        data = GroupCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        rules = []
        for raw in request.data.get("rules") or []:
            rule = RuleInputSerializer(data=raw)
            rule.is_valid(raise_exception=True)
            rules.append(rule.request())
        group = security_groups.group_create(
            actor=self.actor, name=v["name"], description=v.get("description", ""), rules=rules
        )
        return Response(SecurityGroupSerializer(self.get_queryset().get(pk=group.pk)).data, status=201)

    @extend_schema(request=GroupUpdateSerializer, responses={200: SecurityGroupSerializer})
    def partial_update(self, request, pk=None):
        group = self.get_object()
        data = GroupUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        security_groups.group_update(actor=self.actor, group=group, **data.validated_data)
        return Response(SecurityGroupSerializer(self.get_queryset().get(pk=group.pk)).data)

    def perform_destroy(self, group):
        security_groups.group_delete(actor=self.actor, group=group)


class RuleCreateSerializer(RuleInputSerializer):
    security_group_id = serializers.UUIDField(help_text="The group the rule is added to.")


class SecurityGroupRuleViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, TenantScopedViewSet
):
    """The rules of the tenant's security groups, each allowing one kind of traffic. Adding or
    removing one reaches the groups' running instances within seconds."""

    queryset = SecurityGroupRule.objects.all()
    serializer_class = RuleSerializer

    def scope(self, queryset):
        return queryset.filter(group__tenant=self.actor.tenant)

    @extend_schema(request=RuleCreateSerializer, responses={201: RuleSerializer})
    def create(self, request):
        data = RuleCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        group = security_groups.resolve_group(
            self.actor.tenant, str(data.validated_data["security_group_id"]), "security_group_id"
        )
        rule = security_groups.rule_add(actor=self.actor, group=group, request=data.request())
        return Response(RuleSerializer(rule).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, rule):
        security_groups.rule_delete(actor=self.actor, rule=rule)


class MembershipSerializer(StrictSerializer):
    security_group_ids = serializers.ListField(
        child=serializers.UUIDField(), max_length=16, help_text="Every group the instance is to be a member of."
    )
