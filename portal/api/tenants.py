from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.api.inputs import StrictSerializer
from portal.api.permissions import WritesNeedAWritableToken
from portal.api.viewsets import TenantScopedViewSet
from tenants import services
from tenants.access import actor_for_request
from tenants.models import AccessKey, ApiToken, Invitation, Membership, Role, SshKey, Tenant, validate_one_line


class TenantSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()

    class Meta:
        model = Tenant
        fields = ["id", "name", "slug", "status", "billing_email", "personal", "created_at", "role"]

    def get_role(self, tenant) -> str:
        return self.context.get("role", "")


class TenantUpdateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100, required=False, validators=[validate_one_line])
    billing_email = serializers.EmailField(max_length=254, required=False)


class CurrentTenantView(APIView):
    """The tenant this request acts for."""

    write_role = Role.OWNER

    @extend_schema(responses=TenantSerializer)
    def get(self, request):
        actor = actor_for_request(request)
        return Response(TenantSerializer(actor.tenant, context={"role": actor.role}).data)

    @extend_schema(request=TenantUpdateSerializer, responses=TenantSerializer)
    def patch(self, request):
        actor = actor_for_request(request)
        data = TenantUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        tenant = services.tenant_update(actor=actor, **data.validated_data)
        return Response(TenantSerializer(tenant, context={"role": actor.role}).data)


class MyTenantsView(APIView):
    """Every tenant the user belongs to, with their role in each."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=TenantSerializer(many=True))
    def get(self, request):
        memberships = Membership.objects.filter(user=request.user).select_related("tenant")
        return Response([TenantSerializer(m.tenant, context={"role": m.role}).data for m in memberships])


class MemberSerializer(serializers.ModelSerializer):
    email = serializers.EmailField(source="user.email", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "email", "role", "created_at"]


class MemberUpdateSerializer(StrictSerializer):
    whole_on_patch = True  # the PATCH needs `role`; an empty one is refused (portal.openapi)

    role = serializers.ChoiceField(choices=Role.choices)


class MemberViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, TenantScopedViewSet):
    queryset = Membership.objects.select_related("user")
    serializer_class = MemberSerializer
    write_role = Role.ADMIN

    @extend_schema(request=MemberUpdateSerializer, responses=MemberSerializer)
    def partial_update(self, request, pk=None):
        membership = self.get_object()
        data = MemberUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.membership_set_role(
            actor=self.actor, membership=membership, role=data.validated_data["role"]
        )
        return Response(MemberSerializer(membership).data)

    def perform_destroy(self, membership):
        services.membership_remove(actor=self.actor, membership=membership)


class InvitationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Invitation
        fields = ["id", "email", "role", "created_at", "expires_at", "accepted_at"]


class InvitationCreatedSerializer(InvitationSerializer):
    token = serializers.CharField(read_only=True, help_text="Shown once; also sent by e-mail.")

    class Meta(InvitationSerializer.Meta):
        fields = [*InvitationSerializer.Meta.fields, "token"]


class InvitationCreateSerializer(StrictSerializer):
    email = serializers.EmailField(max_length=254)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)


class InvitationAcceptSerializer(StrictSerializer):
    token = serializers.CharField(max_length=200)


class InvitationViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, TenantScopedViewSet
):
    queryset = Invitation.objects.all()
    serializer_class = InvitationSerializer
    write_role = Role.ADMIN

    @extend_schema(request=InvitationCreateSerializer, responses={201: InvitationCreatedSerializer})
    def create(self, request):
        data = InvitationCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        invitation, token = services.invitation_create(actor=self.actor, **data.validated_data)
        invitation.token = token
        return Response(InvitationCreatedSerializer(invitation).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, invitation):
        services.invitation_revoke(actor=self.actor, invitation=invitation)


class InvitationAcceptView(APIView):
    """Accept an invitation sent to the logged-in user's e-mail address."""

    permission_classes = [IsAuthenticated, WritesNeedAWritableToken]

    @extend_schema(request=InvitationAcceptSerializer, responses={201: MemberSerializer})
    def post(self, request):
        data = InvitationAcceptSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.invitation_accept(user=request.user, token=data.validated_data["token"])
        return Response(MemberSerializer(membership).data, status=status.HTTP_201_CREATED)


class TokenSerializer(serializers.ModelSerializer):
    user = serializers.EmailField(source="user.email", read_only=True)

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "scope",
            "prefix",
            "user",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
        ]


class TokenCreatedSerializer(TokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The secret. Shown once, never again.")

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "token"]


class TokenCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)
    scope = serializers.ChoiceField(choices=ApiToken.Scope.choices, default=ApiToken.Scope.WRITE)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class TokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, TenantScopedViewSet):
    """API tokens of the tenant. DELETE revokes; a revoked token stays listed as history."""

    queryset = ApiToken.objects.select_related("user")
    serializer_class = TokenSerializer
    write_role = Role.ADMIN

    @extend_schema(request=TokenCreateSerializer, responses={201: TokenCreatedSerializer})
    def create(self, request):
        data = TokenCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        token, secret = services.token_create(actor=self.actor, **data.validated_data)
        token.token = secret
        return Response(TokenCreatedSerializer(token).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, token):
        services.token_revoke(actor=self.actor, token=token)


class AccessKeySerializer(serializers.ModelSerializer):
    user = serializers.EmailField(source="user.email", read_only=True)

    class Meta:
        model = AccessKey
        fields = [
            "id",
            "name",
            "scope",
            "access_key_id",
            "user",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
        ]


class AccessKeyCreatedSerializer(AccessKeySerializer):
    secret_access_key = serializers.CharField(read_only=True, help_text="The secret. Shown once, never again.")

    class Meta(AccessKeySerializer.Meta):
        fields = [*AccessKeySerializer.Meta.fields, "secret_access_key"]


class AccessKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, TenantScopedViewSet):
    """EC2 access keys of the tenant, for the EC2-compatible API at /ec2/ (AWS Signature
    Version 4). Roles and scopes as for tokens. DELETE revokes; a revoked key stays listed."""

    queryset = AccessKey.objects.select_related("user")
    serializer_class = AccessKeySerializer
    write_role = Role.ADMIN

    @extend_schema(request=TokenCreateSerializer, responses={201: AccessKeyCreatedSerializer})
    def create(self, request):
        data = TokenCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key, secret = services.access_key_create(actor=self.actor, **data.validated_data)
        key.secret_access_key = secret
        return Response(AccessKeyCreatedSerializer(key).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, key):
        services.access_key_revoke(actor=self.actor, key=key)


class SshKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = SshKey
        fields = ["id", "name", "public_key", "fingerprint", "created_at"]


class SshKeyCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)
    public_key = serializers.CharField(max_length=16384)


class SshKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, TenantScopedViewSet):
    queryset = SshKey.objects.all()
    serializer_class = SshKeySerializer

    @extend_schema(request=SshKeyCreateSerializer, responses={201: SshKeySerializer})
    def create(self, request):
        data = SshKeyCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key = services.sshkey_create(actor=self.actor, **data.validated_data)
        return Response(SshKeySerializer(key).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, key):
        services.sshkey_delete(actor=self.actor, key=key)
