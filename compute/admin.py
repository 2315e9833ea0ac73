from django.contrib import admin, messages

from compute import hosts, services
from compute.models import Flavor, Host, Image, Instance, InstanceAction, IpPool
from portal.api import ConflictError


class IpPoolInline(admin.StackedInline):
    model = IpPool
    can_delete = False


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "uri", "queue", "vcpus_used", "memory_mb_used", "disk_gb_used", "last_heartbeat"]
    list_filter = ["status", "domain_type"]
    search_fields = ["name", "uri"]
    readonly_fields = ["vcpus_used", "memory_mb_used", "disk_gb_used", "last_heartbeat", "orphans"]
    inlines = [IpPoolInline]
    actions = ["disable", "enable"]

    @admin.action(description="Disable the selected hosts (no new instances)")
    def disable(self, request, queryset):
        for host in queryset:
            hosts.host_set_status(actor=None, host=host, status=Host.Status.DISABLED)

    @admin.action(description="Enable the selected hosts")
    def enable(self, request, queryset):
        for host in queryset:
            hosts.host_set_status(actor=None, host=host, status=Host.Status.UP)


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["name", "os_family", "os_version", "visibility", "state", "tenant", "size_bytes"]
    list_filter = ["visibility", "state", "os_family"]
    search_fields = ["name", "tenant__name"]


@admin.register(Flavor)
class FlavorAdmin(admin.ModelAdmin):
    list_display = ["name", "vcpus", "memory_mb", "disk_gb", "bandwidth_mbit", "traffic_gb", "sla_percent", "active"]
    list_filter = ["active"]

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.instances.exists():
            return ["name", "vcpus", "memory_mb", "disk_gb", "bandwidth_mbit", "traffic_gb", "sla_percent"]
        return []


class InstanceActionInline(admin.TabularInline):
    model = InstanceAction
    extra = 0
    can_delete = False
    readonly_fields = ["action", "step", "status", "user", "started_at", "duration_ms", "error"]
    fields = readonly_fields


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "state", "host", "ip_address", "vcpus", "memory_mb", "disk_gb", "created_at"]
    list_filter = ["state", "host"]
    search_fields = ["name", "id", "ip_address", "tenant__name"]
    readonly_fields = [f.name for f in Instance._meta.fields]
    inlines = [InstanceActionInline]
    actions = ["retry"]

    @admin.action(description="Retry the failed build of the selected instances")
    def retry(self, request, queryset):
        for instance in queryset:
            try:
                services.instance_retry(actor=None, instance=instance)
            except ConflictError as exc:
                self.message_user(request, f"{instance.name}: {exc.detail}", messages.WARNING)
