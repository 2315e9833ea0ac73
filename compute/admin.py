from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from base.errors import Conflict, Refused
from compute import hosts, images, migration, progress, services
from compute.models import Flavor, Host, IdempotencyKey, Image, Instance, InstanceAction, IpAllocation, IpPool
from compute.transitions import refusal
from tenants.access import operator_actor


class IpPoolInline(admin.StackedInline):
    model = IpPool
    can_delete = False


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "segment", "uri", "queue", "vcpus", "memory", "disk", "last_heartbeat"]
    list_filter = ["status", "domain_type", "segment"]
    search_fields = ["name", "uri"]
    readonly_fields = [
        "vcpus_used",
        "memory_mb_used",
        "disk_gb_used",
        "last_heartbeat",
        "status_detail",
        "fenced_at",
        "orphans",
    ]
    inlines = [IpPoolInline]
    actions = ["disable", "enable", "drain", "undrain"]

    @admin.display(description="vCPU used / capacity")
    def vcpus(self, host: Host) -> str:
        return f"{host.vcpus_used} / {host.capacity()['vcpus']}"

    @admin.display(description="Memory MiB used / capacity")
    def memory(self, host: Host) -> str:
        return f"{host.memory_mb_used} / {host.capacity()['memory_mb']}"

    @admin.display(description="Disk GiB used / capacity")
    def disk(self, host: Host) -> str:
        return f"{host.disk_gb_used} / {host.capacity()['disk_gb']}"

    @admin.action(description="Disable the selected hosts (no new instances)")
    def disable(self, request, queryset):
        for host in queryset:
            hosts.host_set_status(actor=operator_actor(request.user), host=host, status=Host.Status.DISABLED)

    @admin.action(description="Enable the selected hosts")
    def enable(self, request, queryset):
        for host in queryset:
            hosts.host_set_status(actor=operator_actor(request.user), host=host, status=Host.Status.UP)

    @admin.action(description=gettext_lazy("Drain the selected hosts (maintenance: every instance moves off)"))
    def drain(self, request, queryset):
        # The API's drain (compute.migration.host_drain): what cannot move now is listed, and a
        # second drain moves it once it can.
        for host in queryset.order_by("name"):
            try:
                result = migration.host_drain(actor=operator_actor(request.user), host=host)
            except Refused as exc:
                self.message_user(request, f"{host.name}: {exc.message}", messages.WARNING)
                continue
            moving = ", ".join(entry["name"] for entry in result["moving"]) or "-"
            self.message_user(
                request,
                _("%(host)s: in maintenance; moving %(count)d: %(names)s.")
                % {"host": host.name, "count": len(result["moving"]), "names": moving},
            )
            for entry in result["waiting"]:
                self.message_user(
                    request,
                    _("%(host)s: %(name)s waits (drain again later): %(reason)s")
                    % {"host": host.name, "name": entry["name"], "reason": entry["reason"]},
                    messages.WARNING,
                )

    @admin.action(description=gettext_lazy("Undrain the selected hosts (back in service)"))
    def undrain(self, request, queryset):
        for host in queryset:
            hosts.host_set_status(actor=operator_actor(request.user), host=host, status=Host.Status.UP)
            self.message_user(request, _("%(host)s: back in service.") % {"host": host.name})


class MigrateForm(forms.Form):
    """The intermediate page of the admin's migrate action: the target, or the scheduler's pick.
    Live or cold is not chosen: as in the API, a running instance moves live and a stopped one
    cold (compute.migration.instance_migrate)."""

    host = forms.ModelChoiceField(
        queryset=Host.objects.filter(status=Host.Status.UP).order_by("name"),
        required=False,
        empty_label=gettext_lazy("Let the scheduler pick"),
        label=gettext_lazy("Target host"),
    )


def migration_mode(instance: Instance) -> str:
    """How the instance would move now, in the operator's words."""
    if reason := refusal("migrate", instance.state):
        return reason
    if instance.shared_disk:
        # Nothing is copied: only hosts of its segment that mount the shared pool can take it.
        if instance.state == Instance.State.RUNNING:
            return _("live, while it runs; its disk stays on the shared storage of segment %(segment)s") % {
                "segment": instance.host.segment
            }
        return _("cold; its disk stays on the shared storage of segment %(segment)s") % {
            "segment": instance.host.segment
        }
    if instance.state == Instance.State.RUNNING:
        return _("live, while it runs (hosts of segment %(segment)s only)") % {"segment": instance.host.segment or "-"}
    return _("cold: its disk is copied while it is stopped")


@admin.register(IpAllocation)
class IpAllocationAdmin(admin.ModelAdmin):
    list_display = ["address", "pool", "instance", "created_at"]
    list_filter = ["pool__host"]
    search_fields = ["address", "instance__name", "instance__id"]
    raw_id_fields = ["instance"]

    def has_add_permission(self, request) -> bool:
        return False  # addresses are allocated by instance_create


class ImageImportForm(forms.ModelForm):
    """Add an image: upload a file, or give a URL and its SHA-256 (downloaded by a worker).
    The checks are compute.images', as in the API; a refusal is shown on the field to blame."""

    operator = None  # the staff user adding the image (set by ImageAdmin.get_form)
    file = forms.FileField(required=False, help_text="A qcow2 or raw image file.")
    url = forms.URLField(required=False, max_length=2000, assume_scheme="https", help_text="Or: http(s) URL")
    sha256 = forms.CharField(required=False, max_length=71, help_text="Required with a URL; checked when given.")

    class Meta:
        model = Image
        fields = ["name", "os_family", "os_version", "min_memory_mb"]

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        upload, url = data.get("file"), data.get("url")
        if bool(upload) == bool(url):
            raise forms.ValidationError("Upload a file or give a URL (one of them).")
        meta = {k: data[k] for k in ("name", "os_family", "os_version", "min_memory_mb")}
        try:
            if url:
                self.imported = images.start_url_import(
                    actor=operator_actor(self.operator), url=url, sha256=data.get("sha256", ""), **meta
                )
            else:
                sha256 = images.parse_sha256(data.get("sha256"))
                staged = images.stage_chunks(upload.chunks(images.CHUNK))
                self.imported = images.import_upload(
                    actor=operator_actor(self.operator), staged=staged, sha256=sha256, **meta
                )
        except images.ImportRefused as exc:
            self.add_error(exc.field if exc.field in self.fields else None, exc.message)
        return data


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "os_family",
        "os_version",
        "visibility",
        "state",
        "progress",
        "tenant",
        "host",
        "size_bytes",
    ]
    list_filter = ["visibility", "state", "os_family"]
    search_fields = ["name", "tenant__name"]
    raw_id_fields = ["tenant", "source_instance"]
    readonly_fields = ["source_url", "progress_bytes", "expected_bytes", "error_field", "error_message"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = type("ImageImportForm", (ImageImportForm,), {"operator": request.user})
            kwargs["fields"] = None
        return super().get_form(request, obj, **kwargs)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": ["name", "os_family", "os_version", "min_memory_mb", "file", "url", "sha256"]})]
        return super().get_fieldsets(request, obj)

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def save_form(self, request, form, change):
        if not change:
            return form.imported  # made (or queued) by the form's checks
        return super().save_form(request, form, change)

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)

    def delete_model(self, request, obj):
        hosts.image_delete(actor=operator_actor(request.user), image=obj)

    def delete_queryset(self, request, queryset):
        for image in queryset.exclude(state=Image.State.DELETED):
            hosts.image_delete(actor=operator_actor(request.user), image=image)

    @admin.display(description="Import")
    def progress(self, image: Image) -> str:
        if image.state == Image.State.PENDING and image.source_url:
            total = f" of {image.expected_bytes}" if image.expected_bytes else ""
            return f"{image.progress_bytes}{total} bytes"
        if image.state == Image.State.ERROR and image.error_field:
            return f"{image.error_field}: {image.error_message}"
        return ""


@admin.register(Flavor)
class FlavorAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "vcpus",
        "memory_mb",
        "disk_gb",
        "bandwidth_mbit",
        "traffic_gb",
        "sla_percent",
        "ha",
        "active",
    ]
    list_filter = ["active", "ha"]
    search_fields = ["name"]

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.instances.exists():
            # Its instances' disks were placed by it: local, or on shared storage for HA.
            return ["name", "vcpus", "memory_mb", "disk_gb", "bandwidth_mbit", "traffic_gb", "sla_percent", "ha"]
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
    readonly_fields = ["migration", *(f.name for f in Instance._meta.fields)]
    inlines = [InstanceActionInline]
    actions = ["retry", "start", "stop", "delete_instances", "migrate"]

    def _each(self, request, queryset, service) -> None:
        """Run an operator action on each instance, as the operator; refusals are listed, not raised."""
        for instance in queryset:
            try:
                service(actor=operator_actor(request.user, instance.tenant), instance=instance)
            except Conflict as exc:
                self.message_user(request, f"{instance.name}: {exc.message}", messages.WARNING)

    @admin.action(description="Retry the selected instances in error (builds what is missing, keeps the disk)")
    def retry(self, request, queryset):
        self._each(request, queryset, services.instance_retry)

    @admin.action(description="Start the selected instances")
    def start(self, request, queryset):
        self._each(request, queryset, services.instance_start)

    @admin.action(description="Stop the selected instances")
    def stop(self, request, queryset):
        self._each(request, queryset, services.instance_stop)

    @admin.action(description="Delete the selected instances (destroys their disks)")
    def delete_instances(self, request, queryset):
        self._each(request, queryset, services.instance_delete)

    @admin.action(description=gettext_lazy("Migrate to another host"))
    def migrate(self, request, queryset):
        """Ask for the target on a page of its own, then move each instance as the API does."""
        queryset = queryset.select_related("host", "tenant").order_by("name")
        form = MigrateForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            target = form.cleaned_data["host"]
            for instance in queryset:
                try:
                    migration.instance_migrate(
                        actor=operator_actor(request.user, instance.tenant),
                        instance=instance,
                        host_id=str(target.pk) if target else None,
                    )
                except Refused as exc:
                    self.message_user(request, f"{instance.name}: {exc.message}", messages.WARNING)
                else:
                    self.message_user(request, _("%(name)s: migration started.") % {"name": instance.name})
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": _("Migrate to another host"),
            "opts": self.model._meta,
            "form": form,
            "instances": [(instance, migration_mode(instance)) for instance in queryset],
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/compute/instance/migrate.html", context)

    @admin.display(description=gettext_lazy("Migration"))
    def migration(self, instance: Instance):
        """The latest migration and its steps, read as the instance page reads a build's."""
        log = list(instance.actions.filter(action="migrate").select_related("user").order_by("id"))
        steps = progress.action_steps(log)
        if steps is None:
            return _("Never migrated.")
        target_id = steps["action"].detail.get("target")
        target = Host.objects.filter(pk=target_id).values_list("name", flat=True).first() if target_id else None
        return render_to_string(
            "admin/compute/instance/migration_progress.html",
            {"progress": steps, "target": target, "in_flight": instance.state == Instance.State.MIGRATING},
        )

    def get_actions(self, request):
        actions = super().get_actions(request)
        # Django's bulk delete would remove rows without destroying the domains behind them.
        actions.pop("delete_selected", None)
        return actions

    def has_add_permission(self, request) -> bool:
        return False  # instances are made by instance_create (quota, placement, address)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(InstanceAction)
class InstanceActionAdmin(admin.ModelAdmin):
    list_display = ["started_at", "instance", "action", "step", "status", "user", "duration_ms"]
    list_filter = ["status", "action"]
    search_fields = ["instance__name", "instance__id", "error"]
    date_hierarchy = "started_at"
    list_select_related = ["instance", "user"]
    readonly_fields = [f.name for f in InstanceAction._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(admin.ModelAdmin):
    list_display = ["key", "tenant", "instance", "created_at"]
    search_fields = ["key", "tenant__name"]
    readonly_fields = ["tenant", "key", "request_hash", "instance", "created_at"]

    def has_add_permission(self, request) -> bool:
        return False
