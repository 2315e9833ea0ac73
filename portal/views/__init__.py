"""The browser UI's views, by area; portal/urls.py and portal/ui_urls.py route to them."""

from portal.views.instances import instance_console
from portal.views.public import healthz, home
from portal.views.tenancy import invitation_accept, tenant_switch

__all__ = ["healthz", "home", "instance_console", "invitation_accept", "tenant_switch"]
