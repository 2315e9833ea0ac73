from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from portal import i18n, metrics, views
from portal.api import billing as billing_api
from portal.api import tenants as tenants_api
from portal.api.compute import catalogue, firewall, instances, operators, quota
from portal.api.errors import api_not_found
from portal.ec2.views import ec2
from portal.views import health

# Uncaught exceptions on /api/ paths answer JSON (a 503 for database faults), not an HTML page.
handler500 = "portal.api.errors.server_error"

router = SimpleRouter(trailing_slash=False)
router.register("members", tenants_api.MemberViewSet, basename="member")
router.register("invitations", tenants_api.InvitationViewSet, basename="invitation")
router.register("tokens", tenants_api.TokenViewSet, basename="token")
router.register("access-keys", tenants_api.AccessKeyViewSet, basename="accesskey")
router.register("ssh-keys", tenants_api.SshKeyViewSet, basename="sshkey")
router.register("images", catalogue.ImageViewSet, basename="image")
router.register("flavors", catalogue.FlavorViewSet, basename="flavor")
router.register("instances", instances.InstanceViewSet, basename="instance")
router.register("security-groups", firewall.SecurityGroupViewSet, basename="security-group")
router.register("security-group-rules", firewall.SecurityGroupRuleViewSet, basename="security-group-rule")
router.register("invoices", billing_api.InvoiceViewSet, basename="invoice")
router.register("admin/hosts", operators.AdminHostViewSet, basename="admin-host")
router.register("admin/instances", operators.AdminInstanceViewSet, basename="admin-instance")
router.register("admin/images", operators.AdminImageViewSet, basename="admin-image")
router.register("admin/flavors", operators.AdminFlavorViewSet, basename="admin-flavor")

api_v1 = [
    path("tenant", tenants_api.CurrentTenantView.as_view(), name="tenant"),
    path("tenants", tenants_api.MyTenantsView.as_view(), name="tenants"),
    path("quota", quota.QuotaView.as_view(), name="quota"),
    path("admin/consolidation", operators.ConsolidationView.as_view(), name="admin-consolidation"),
    path("usage", billing_api.UsageView.as_view(), name="usage"),
    path("invitations/accept", tenants_api.InvitationAcceptView.as_view(), name="invitation-accept"),
    *router.urls,
]

urlpatterns = [
    # Namespaced ("api:instance-list"), so the UI's page names never collide with the API's.
    path("api/v1/", include((api_v1, "api"), namespace="api")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Served by the site itself, under its CSP (portal/templates/portal/api_docs/).
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="portal/api_docs/swagger_ui.html"),
        name="api-docs",
    ),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="portal/api_docs/redoc.html"),
        name="api-redoc",
    ),
    re_path(r"^api/", api_not_found),
    path("ec2/", ec2, name="ec2"),
    path("ec2", ec2),
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("healthz", views.healthz, name="healthz"),
    path("healthz/live", health.live, name="healthz-live"),
    path("healthz/ready", health.ready, name="healthz-ready"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("i18n/setlang/", i18n.set_language, name="set_language"),
    path("instances/<uuid:pk>/console", views.instance_console, name="instance-console-page"),
    path("invitations/accept/<str:token>", views.invitation_accept, name="invitation-accept-page"),
    path("tenants/switch", views.tenant_switch, name="tenant-switch"),
    path("", views.home, name="home"),
    path("", include("portal.ui_urls")),
]
