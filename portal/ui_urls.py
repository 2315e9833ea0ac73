"""Routes of the browser UI (self-service pages and the operator dashboard).

portal/urls.py routes the older pages (home, console, invitation link, tenant switch) itself.
"""

from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

from portal.views import firewall, images, instances, ops, public, tenancy

urlpatterns = [
    # Browsers ask for /favicon.ico whatever the page says.
    path("favicon.ico", RedirectView.as_view(url=static("portal/favicon.svg"), permanent=True)),
    path("flavors/", public.catalogue, name="catalogue"),
    # instances
    path("instances/", instances.dashboard, name="dashboard"),
    path("instances/new", instances.create, name="instance-create"),
    path("instances/new/price", instances.create_price, name="instance-price"),
    path("instances/<uuid:pk>", instances.detail, name="instance"),
    path("instances/<uuid:pk>/live", instances.live, name="instance-live"),
    path("instances/<uuid:pk>/usage", instances.usage, name="instance-usage"),
    path("instances/<uuid:pk>/resize", instances.resize, name="instance-resize"),
    path("instances/<uuid:pk>/rebuild", instances.rebuild, name="instance-rebuild"),
    path("instances/<uuid:pk>/snapshot", instances.snapshot, name="instance-snapshot"),
    path("instances/<uuid:pk>/delete", instances.delete, name="instance-delete"),
    path("instances/<uuid:pk>/edit", instances.edit, name="instance-edit"),
    path("instances/<uuid:pk>/console-log", instances.console_log, name="instance-console-log"),
    path("instances/<uuid:pk>/security-groups/attach", firewall.instance_attach, name="instance-group-attach"),
    path(
        "instances/<uuid:pk>/security-groups/<uuid:group_pk>/detach",
        firewall.instance_detach,
        name="instance-group-detach",
    ),
    path("instances/<uuid:pk>/self-help/<slug:action>", instances.self_help, name="instance-self-help"),
    path("instances/<uuid:pk>/<slug:action>", instances.power, name="instance-power"),
    # the tenant
    path("tenant/members", tenancy.members, name="tenant-members"),
    path("tenant/members/<uuid:pk>/role", tenancy.member_role, name="tenant-member-role"),
    path("tenant/members/<uuid:pk>/remove", tenancy.member_remove, name="tenant-member-remove"),
    path("tenant/invitations", tenancy.invitation_create, name="tenant-invite"),
    path("tenant/invitations/<uuid:pk>/revoke", tenancy.invitation_revoke, name="tenant-invitation-revoke"),
    path("tenant/quota", tenancy.quota, name="tenant-quota"),
    path("tenant/tokens", tenancy.tokens, name="tenant-tokens"),
    path("tenant/tokens/<uuid:pk>/revoke", tenancy.token_revoke, name="tenant-token-revoke"),
    path("tenant/access-keys", tenancy.access_key_create, name="tenant-access-keys"),
    path("tenant/access-keys/<uuid:pk>/revoke", tenancy.access_key_revoke, name="tenant-access-key-revoke"),
    path("tenant/ssh-keys", tenancy.ssh_keys, name="tenant-ssh-keys"),
    path("tenant/ssh-keys/<uuid:pk>/delete", tenancy.ssh_key_delete, name="tenant-ssh-key-delete"),
    path("tenant/billing", tenancy.billing, name="tenant-billing"),
    path("tenant/activity", tenancy.activity, name="tenant-activity"),
    path("tenant/images", images.images, name="images"),
    path("tenant/images/<uuid:pk>/rename", images.image_rename, name="image-rename"),
    path("tenant/images/<uuid:pk>/delete", images.image_delete, name="image-delete"),
    path("tenant/firewall", firewall.firewall, name="tenant-firewall"),
    path("tenant/firewall/<uuid:pk>/edit", firewall.group_edit, name="tenant-firewall-group-edit"),
    path("tenant/firewall/<uuid:pk>/delete", firewall.group_delete, name="tenant-firewall-group-delete"),
    path("tenant/firewall/<uuid:pk>/rules", firewall.rule_add, name="tenant-firewall-rule-add"),
    path("tenant/firewall/rules/<uuid:pk>/delete", firewall.rule_delete, name="tenant-firewall-rule-delete"),
    path("tenant/quota/live", tenancy.quota_live, name="tenant-quota-live"),
    path("account/notifications", tenancy.notice_settings, name="notice-settings"),
    # operators
    path("ops/", ops.dashboard, name="ops"),
    path("ops/hosts", ops.hosts, name="ops-hosts"),
]
