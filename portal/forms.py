"""Forms of the browser UI. They check input shape; the services decide everything else."""

from __future__ import annotations

from datetime import UTC, datetime, time

from django import forms
from django.conf import settings
from django.core.validators import MaxValueValidator
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from compute.models import CUSTOM_SIZE_FIELDS, Flavor, Image, SecurityGroup, SecurityGroupRule
from compute.security_groups import RuleRequest
from compute.selectors import images_visible_filter
from compute.sizing import Size, custom_size, custom_size_errors
from portal.i18n import group_name
from tenants.access import Actor
from tenants.models import ApiToken, NoticeSettings, Role, SshKey
from tenants.sshkeys import InvalidKey, parse_public_key

# The choices of tenants.models in the reader's language (the model keeps its English labels).
ROLE_CHOICES = [
    (Role.VIEWER, _("Viewer")),
    (Role.MEMBER, _("Member")),
    (Role.ADMIN, _("Admin")),
    (Role.OWNER, _("Owner")),
]
SCOPE_CHOICES = [(ApiToken.Scope.READ, _("Read only")), (ApiToken.Scope.WRITE, _("Read and write"))]

CUSTOM_FIELDS = CUSTOM_SIZE_FIELDS
CUSTOM_LABELS = {
    "vcpus": (_("vCPUs"), ""),
    "memory_mb": (_("Memory"), "MiB"),
    "disk_gb": (_("Disk"), "GiB"),
    "bandwidth_mbit": (_("Bandwidth"), "Mbit/s"),
    "traffic_gb": (_("Monthly traffic"), "GiB"),
}
# Where the sliders start: a small useful machine, moved inside the operator's limits.
CUSTOM_START = {"vcpus": 1, "memory_mb": 1024, "disk_gb": 10, "bandwidth_mbit": 100, "traffic_gb": 1000}


def _step(name: str, low: int, high: int) -> int:
    steps = {"memory_mb": 128, "traffic_gb": 10}
    step = steps.get(name, 1)
    return step if low % step == 0 and high % step == 0 else 1


class SizeForm(forms.Form):
    """A standard flavor, or a custom size inside settings.CUSTOM_SIZE_LIMITS."""

    MODES = [("flavor", _("Standard flavor")), ("custom", _("Custom size"))]
    size_mode = forms.ChoiceField(choices=MODES, widget=forms.RadioSelect, initial="flavor", label=_("Size"))
    flavor = forms.ModelChoiceField(
        queryset=Flavor.objects.none(), required=False, widget=forms.RadioSelect, empty_label=None, label=_("Flavor")
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["flavor"].queryset = Flavor.objects.filter(active=True)
        self.limits = dict(settings.CUSTOM_SIZE_LIMITS)
        for name in CUSTOM_FIELDS:
            low, high = self.limits[name]
            label, unit = CUSTOM_LABELS[name]
            self.fields[name] = forms.IntegerField(
                label=label,
                required=False,
                min_value=low,
                max_value=high,
                initial=min(max(CUSTOM_START[name], low), high),
                widget=forms.NumberInput(attrs={"type": "range", "step": _step(name, low, high), "data-unit": unit}),
                help_text=(_("%(low)s to %(high)s") % {"low": low, "high": high} + f" {unit}").strip(),
            )
        first_flavor = self.fields["flavor"].queryset.first()
        if first_flavor is None:
            self.fields["size_mode"].initial = "custom"
        else:
            self.fields["flavor"].initial = first_flavor.pk

    def custom_fields(self) -> list[tuple[forms.BoundField, str]]:
        """The custom size inputs, each with its unit."""
        return [(self[name], CUSTOM_LABELS[name][1]) for name in CUSTOM_FIELDS]

    def mode(self) -> str:
        """The kind of size the form shows now: submitted, else the initial one."""
        if self.is_bound:
            return self.data.get("size_mode", "")
        return self.initial.get("size_mode") or self.fields["size_mode"].initial

    def clean(self):
        data = super().clean()
        # Only the chosen kind of size counts: leftovers of the other one are not errors.
        ignored = CUSTOM_FIELDS if data.get("size_mode") == "flavor" else ("flavor",)
        for name in ignored if data.get("size_mode") else ():
            self.errors.pop(name, None)
        if data.get("size_mode") == "flavor":
            if not data.get("flavor") and "flavor" not in self.errors:
                self.add_error("flavor", _("Choose a flavor, or switch to a custom size."))
        elif data.get("size_mode") == "custom":
            values = {name: data.get(name) for name in CUSTOM_FIELDS if name not in self.errors}
            for name, messages in custom_size_errors(values).items():
                if name not in self.errors:
                    self.add_error(name, messages)
        return data

    def size(self) -> Size:
        data = self.cleaned_data
        if data["size_mode"] == "flavor":
            return Size.of_flavor(data["flavor"])
        return custom_size({name: data[name] for name in CUSTOM_FIELDS})

    def flavor_id(self) -> str | None:
        flavor = self.cleaned_data.get("flavor") if self.cleaned_data.get("size_mode") == "flavor" else None
        return str(flavor.pk) if flavor else None


def visible_images(actor: Actor):
    return Image.objects.filter(images_visible_filter(actor.tenant), state=Image.State.ACTIVE)


class InstanceCreateForm(SizeForm):
    name = forms.CharField(max_length=255, label=_("Name"), help_text=_("Also the guest's hostname, made DNS-safe."))
    count = forms.IntegerField(
        required=False,
        min_value=1,
        initial=1,
        label=_("How many"),
        help_text=_(
            "For more than one, the name is a pattern: web-{n} makes web-1, web-2, …; web-{n:02} makes web-01."
        ),
    )
    image = forms.ModelChoiceField(
        queryset=Image.objects.none(), widget=forms.RadioSelect, empty_label=None, label=_("Image")
    )
    ssh_keys = forms.ModelMultipleChoiceField(
        queryset=SshKey.objects.none(), required=False, widget=forms.CheckboxSelectMultiple, label=_("SSH keys")
    )
    user_data = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 5, "spellcheck": "false", "class": "font-monospace"}),
        help_text=_("Optional cloud-init user-data, e.g. a #cloud-config document."),
        label=_("User data"),
    )
    security_groups = forms.ModelMultipleChoiceField(
        queryset=SecurityGroup.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label=_("Security groups"),
        help_text=_("What may reach the instance, and what it may send. With none chosen, it joins the default group."),
    )

    field_order = [
        "name",
        "count",
        "image",
        "size_mode",
        "flavor",
        *CUSTOM_FIELDS,
        "ssh_keys",
        "user_data",
        "security_groups",
    ]

    def __init__(self, *args, actor: Actor, default_group: SecurityGroup | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["count"].validators.append(MaxValueValidator(settings.BULK_CREATE_MAX))
        self.fields["count"].widget.attrs.update(min=1, max=settings.BULK_CREATE_MAX)
        self.fields["image"].queryset = visible_images(actor)
        first_image = self.fields["image"].queryset.first()
        self.fields["image"].initial = first_image.pk if first_image else None
        self.fields["ssh_keys"].queryset = SshKey.objects.filter(tenant=actor.tenant)
        self.fields["security_groups"].queryset = SecurityGroup.objects.filter(tenant=actor.tenant)
        if default_group is not None:
            self.fields["security_groups"].initial = [default_group.pk]
        self.order_fields(self.field_order)

    def security_group_ids(self) -> tuple[str, ...] | None:
        """The groups chosen, or None for the tenant's default group (none ticked)."""
        chosen = self.cleaned_data.get("security_groups")
        return tuple(str(group.pk) for group in chosen) if chosen else None

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if "\x00" in name:
            raise forms.ValidationError(_("Null characters are not allowed."))
        return name

    def clean_count(self) -> int:
        return self.cleaned_data["count"] or 1  # left empty: one


class ResizeForm(SizeForm):
    pass


class InstanceEditForm(forms.Form):
    name = forms.CharField(
        max_length=255, label=_("Name"), help_text=_("The guest's hostname stays the one it was built with.")
    )
    tags = forms.CharField(
        label=_("Tags"),
        required=False,
        max_length=400,
        help_text=_("Separated by commas or spaces, e.g. prod, web. Letters, digits, - _ . : (up to 32 each)."),
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if "\x00" in name:
            raise forms.ValidationError(_("Null characters are not allowed."))
        return name

    def clean_tags(self) -> list[str]:
        return [tag for tag in self.cleaned_data["tags"].replace(",", " ").split() if tag]


class RebuildForm(forms.Form):
    image = forms.ModelChoiceField(
        queryset=Image.objects.none(), widget=forms.RadioSelect, empty_label=None, label=_("Image")
    )

    def __init__(self, *args, actor: Actor, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["image"].queryset = visible_images(actor)


class SnapshotForm(forms.Form):
    name = forms.CharField(
        max_length=100, label=_("Name"), help_text=_("The snapshot becomes a private image of this tenant.")
    )


class InvitationForm(forms.Form):
    email = forms.EmailField(max_length=254, label=_("E-mail"))
    role = forms.ChoiceField(choices=ROLE_CHOICES, initial=Role.MEMBER, label=_("Role"))

    def __init__(self, *args, actor: Actor, **kwargs):
        super().__init__(*args, **kwargs)
        if not actor.has_role(Role.OWNER):
            self.fields["role"].choices = [c for c in ROLE_CHOICES if c[0] != Role.OWNER]


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=ROLE_CHOICES, label=_("Role"))


class TokenForm(forms.Form):
    # A fresh random value in each rendered form: the same form sent twice (a reload of the
    # answer page resends it) must not make a second token.
    once = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)
    name = forms.CharField(max_length=100, label=_("Name"))
    scope = forms.ChoiceField(choices=SCOPE_CHOICES, initial=ApiToken.Scope.WRITE, label=_("Scope"))
    expires_on = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        label=_("Expires on"),
        help_text=_("Optional; the token stops working at the end of that day (UTC)."),
    )

    def clean_expires_on(self):
        day = self.cleaned_data.get("expires_on")
        if day and day < timezone.now().date():
            raise forms.ValidationError(_("Pick today or a later day."))
        return day

    def expires_at(self) -> datetime | None:
        day = self.cleaned_data.get("expires_on")
        return datetime.combine(day, time.max, tzinfo=UTC) if day else None


class AccessKeyForm(forms.Form):
    # The same once-only marker as TokenForm's.
    once = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)
    name = forms.CharField(max_length=100, label=_("Name"))
    scope = forms.ChoiceField(choices=SCOPE_CHOICES, initial=ApiToken.Scope.WRITE, label=_("Scope"))


class ImageRenameForm(forms.Form):
    name = forms.CharField(max_length=255, label=_("Name"))


class SshKeyForm(forms.Form):
    name = forms.CharField(max_length=100, label=_("Name"))
    public_key = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "font-monospace"}),
        help_text=_("One line from your ~/.ssh/id_ed25519.pub (or an RSA key of 2048 bits or more)."),
        label=_("Public key"),
    )

    def clean_public_key(self) -> str:
        text = self.cleaned_data["public_key"].strip()
        try:
            parse_public_key(text)
        except InvalidKey as exc:
            raise forms.ValidationError(str(exc)) from None
        return text


# The firewall's words in the reader's language (compute.models keeps the codes and English labels).
DIRECTION_CHOICES = [
    (SecurityGroupRule.Direction.INGRESS, _("Inbound")),
    (SecurityGroupRule.Direction.EGRESS, _("Outbound")),
]
PROTOCOL_CHOICES = [
    (SecurityGroupRule.Protocol.TCP, "TCP"),
    (SecurityGroupRule.Protocol.UDP, "UDP"),
    (SecurityGroupRule.Protocol.ICMP, "ICMP"),
    (SecurityGroupRule.Protocol.ANY, _("Any protocol")),
]


class SecurityGroupForm(forms.Form):
    name = forms.CharField(max_length=64, label=_("Name"))
    description = forms.CharField(max_length=200, required=False, label=_("Description"))

    def __init__(self, *args, default: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if default:  # the default group keeps its name (compute.security_groups)
            self.fields["name"].disabled = True
            self.fields["name"].help_text = _("The default group keeps its name.")


class RuleForm(forms.Form):
    """One firewall rule; the service checks ports, the CIDR and the group (compute.security_groups)."""

    direction = forms.ChoiceField(choices=DIRECTION_CHOICES, label=_("Direction"))
    protocol = forms.ChoiceField(choices=PROTOCOL_CHOICES, label=_("Protocol"))
    port_min = forms.IntegerField(
        required=False, label=_("Port from"), widget=forms.NumberInput(attrs={"inputmode": "numeric"})
    )
    port_max = forms.IntegerField(
        required=False,
        label=_("Port to"),
        widget=forms.NumberInput(attrs={"inputmode": "numeric"}),
        help_text=_("TCP and UDP only; empty for all."),
    )
    cidr = forms.CharField(
        required=False,
        max_length=43,
        label=_("CIDR"),
        widget=forms.TextInput(attrs={"placeholder": "0.0.0.0/0", "spellcheck": "false", "class": "font-monospace"}),
        help_text=_("Where inbound traffic comes from, or outbound traffic goes to; empty for anywhere."),
    )
    remote_group = forms.ChoiceField(
        required=False,
        label=_("Or a security group"),
        help_text=_("Instead of a CIDR: the instances in this group."),
    )
    description = forms.CharField(max_length=200, required=False, label=_("Description"))

    def __init__(self, *args, groups: list[SecurityGroup], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["remote_group"].choices = [
            ("", _("None: use the CIDR")),
            *((str(g.pk), group_name(g)) for g in groups),
        ]

    def rule_request(self) -> RuleRequest:
        data = self.cleaned_data
        return RuleRequest(
            direction=data["direction"],
            protocol=data["protocol"],
            port_min=data["port_min"],
            port_max=data["port_max"],
            cidr=data["cidr"],
            remote_group_id=data["remote_group"] or None,
            description=data["description"],
        )


class NoticeSettingsForm(forms.ModelForm):
    class Meta:
        model = NoticeSettings
        fields = ["incidents", "billing"]
        labels = {"incidents": _("Incidents"), "billing": _("Billing")}
        help_texts = {
            "incidents": _("An instance went into error; a host outage affects your instances."),
            "billing": _("Invoices issued and overdue, suspension (tenant owners only)."),
        }
