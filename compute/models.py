import uuid
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from tenants.models import ApiToken, Tenant


class Host(models.Model):
    """A hypervisor reached through one libvirt URI, served by the workers of one queue."""

    class Status(models.TextChoices):
        UP = "up", "Up"
        DOWN = "down", "Down"
        DISABLED = "disabled", "Disabled"

    class DomainType(models.TextChoices):
        KVM = "kvm", "KVM"
        QEMU = "qemu", "QEMU (software emulation)"
        TEST = "test", "libvirt test driver"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.SlugField(max_length=60, unique=True)
    uri = models.CharField(max_length=300, help_text="libvirt URI, e.g. qemu:///system")
    queue = models.CharField(max_length=100, unique=True, help_text="Celery queue of this host's workers")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UP)
    vcpus_total = models.PositiveIntegerField()
    memory_mb_total = models.PositiveIntegerField()
    disk_gb_total = models.PositiveIntegerField()
    cpu_ratio = models.DecimalField(max_digits=5, decimal_places=2, default=Decimal("4.00"))
    ram_ratio = models.DecimalField(max_digits=5, decimal_places=2, default=Decimal("1.00"))
    disk_ratio = models.DecimalField(max_digits=5, decimal_places=2, default=Decimal("1.00"))
    # What live instances have claimed; changed only by conditional UPDATEs in scheduler.py.
    vcpus_used = models.PositiveIntegerField(default=0)
    memory_mb_used = models.PositiveIntegerField(default=0)
    disk_gb_used = models.PositiveIntegerField(default=0)
    storage_pool = models.CharField(max_length=100, default="default")
    network = models.CharField(max_length=100, default="default")
    # Hosts of one segment share an L2 network and its addresses: an instance keeps its
    # address when it moves between them. Empty: a network of its own.
    segment = models.SlugField(max_length=60, blank=True)
    # A second storage pool, on storage every host of the segment mounts at the same path (NFS,
    # a cluster filesystem): the disks of HA instances live there, so another host of the
    # segment can start them when this one dies (compute.evacuation). Empty: no shared storage.
    shared_pool = models.CharField(max_length=100, blank=True)
    vnc_listen = models.GenericIPAddressField(default="127.0.0.1")
    shaping = models.BooleanField(default=True, help_text="Apply <bandwidth> limits to interfaces")
    domain_type = models.CharField(max_length=8, choices=DomainType.choices, default=DomainType.QEMU)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    # The first heartbeat request the host's worker has not answered yet (None: all answered).
    heartbeat_asked_at = models.DateTimeField(null=True, blank=True)
    # When the control plane last reached the host's hypervisor itself, past a silent worker.
    hypervisor_seen_at = models.DateTimeField(null=True, blank=True)
    status_detail = models.CharField(max_length=200, blank=True, help_text="Why the host is not fully up")
    orphans = models.JSONField(default=dict, blank=True, help_text="Last orphan report")
    # When the host was last fenced (powered off by HOST_FENCE_COMMAND) after it was declared
    # down: only a fenced host's HA instances are started elsewhere.
    fenced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        indexes = [
            # Placement (compute.scheduler.candidate_hosts) orders the hosts that are up by their
            # free memory and takes the first few that fit: walking this index stops after them,
            # where a scan reads and sorts every host (26 ms against 0.1 ms at 10,000 hosts).
            # The expression must stay the scheduler's `free_memory`, or the planner cannot use it.
            models.Index(
                models.ExpressionWrapper(
                    models.F("memory_mb_total") * models.F("ram_ratio") - models.F("memory_mb_used"),
                    output_field=models.IntegerField(),
                ),
                condition=Q(status="up"),
                name="host_free_memory_up",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def capacity(self) -> dict[str, int]:
        return {
            "vcpus": int(self.vcpus_total * self.cpu_ratio),
            "memory_mb": int(self.memory_mb_total * self.ram_ratio),
            "disk_gb": int(self.disk_gb_total * self.disk_ratio),
        }


class IpPool(models.Model):
    """The addresses handed out on one host's libvirt network."""

    host = models.OneToOneField(Host, on_delete=models.CASCADE, related_name="ip_pool")
    cidr = models.CharField(max_length=43)
    gateway = models.GenericIPAddressField()
    first = models.GenericIPAddressField()
    last = models.GenericIPAddressField()

    def __str__(self) -> str:
        return f"{self.host.name} {self.cidr}"


class IpAllocation(models.Model):
    """An address of a pool: held by a live instance, or resting after its instance was
    deleted (`released_at`) until the host's DHCP server has surely forgotten the old guest."""

    pool = models.ForeignKey(IpPool, on_delete=models.PROTECT, related_name="allocations")
    address = models.GenericIPAddressField()
    # One per instance, but for a migration's while: the address on the target is held too.
    instance = models.ForeignKey(
        "Instance", null=True, blank=True, on_delete=models.SET_NULL, related_name="ip_allocations"
    )
    created_at = models.DateTimeField(default=timezone.now)
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["pool", "address"], name="ip_unique_in_pool")]

    def __str__(self) -> str:
        return self.address


def validate_store_name(value: str) -> None:
    """A file name inside the image store: no folders, no way to climb out of it."""
    if value and ("/" in value or "\\" in value or value.startswith(".") or "\x00" in value):
        raise ValidationError("A file name inside the image store, without folders.")


class Image(models.Model):
    class Visibility(models.TextChoices):
        PUBLIC = "public", "Public"
        PRIVATE = "private", "Private"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        ACTIVE = "active", "Active"
        ERROR = "error", "Error"
        DELETED = "deleted", "Deleted"

    class Format(models.TextChoices):
        QCOW2 = "qcow2", "qcow2"
        RAW = "raw", "raw"
        # An install CD: an instance made from it gets an empty disk and boots the ISO first.
        ISO = "iso", "ISO (install CD)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    os_family = models.CharField(max_length=40, default="linux")
    os_version = models.CharField(max_length=40, blank=True)
    format = models.CharField(max_length=8, choices=Format.choices, default=Format.QCOW2)
    size_bytes = models.PositiveBigIntegerField(default=0)
    checksum = models.CharField(max_length=71, blank=True, help_text="sha256:<hex>")
    min_disk_gb = models.PositiveIntegerField(default=1)
    min_memory_mb = models.PositiveIntegerField(default=64)
    visibility = models.CharField(max_length=8, choices=Visibility.choices, default=Visibility.PUBLIC)
    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="images")
    state = models.CharField(max_length=8, choices=State.choices, default=State.ACTIVE)
    # Operator images: a file on the portal's image store, uploaded once to each host's pool.
    source_path = models.CharField(max_length=500, blank=True, validators=[validate_store_name])
    # Snapshots live as a volume on the host they were taken on, and only that host uses them.
    host = models.ForeignKey(Host, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    source_instance = models.ForeignKey(
        "Instance", null=True, blank=True, on_delete=models.SET_NULL, related_name="snapshots"
    )
    # The system a rescued instance boots, with its own disk attached as the second disk.
    rescue = models.BooleanField(default=False, help_text="Offered as the rescue system")
    # Imports (compute.images): where a URL import downloads from, how far it got, and why it
    # was refused (the input field to blame and a sentence).
    source_url = models.URLField(max_length=2000, blank=True)
    expected_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    progress_bytes = models.PositiveBigIntegerField(default=0)
    error_field = models.CharField(max_length=40, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["os_family", "name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(visibility="public", tenant__isnull=True) | Q(visibility="private", tenant__isnull=False),
                name="image_private_has_tenant",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def volume_name(self) -> str:
        return f"img-{self.id}.{self.format}"


# What a customer may choose for a custom size; the SLA of a custom size is the operator's.
CUSTOM_SIZE_FIELDS = ("vcpus", "memory_mb", "disk_gb", "bandwidth_mbit", "traffic_gb")
SIZE_FIELDS = (*CUSTOM_SIZE_FIELDS, "sla_percent")


class Flavor(models.Model):
    """A standard SLA product. Once an instance uses it, its size and SLA never change."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=60, unique=True)
    vcpus = models.PositiveIntegerField()
    memory_mb = models.PositiveIntegerField()
    disk_gb = models.PositiveIntegerField()
    bandwidth_mbit = models.PositiveIntegerField(default=100)
    traffic_gb = models.PositiveIntegerField(default=1000, help_text="Included monthly traffic")
    sla_percent = models.DecimalField(max_digits=6, decimal_places=3, default=Decimal("99.900"))
    # High availability: its instances' disks live on shared storage, and a host that dies has
    # them started again on another host of its segment (compute.evacuation).
    ha = models.BooleanField(default=False, verbose_name="HA", help_text="Restarted on another host when its host dies")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["vcpus", "memory_mb", "disk_gb"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        if not self._state.adding and self.instances.exists():
            stored = Flavor.objects.get(pk=self.pk)
            if any(getattr(stored, f) != getattr(self, f) for f in SIZE_FIELDS):
                raise ValidationError("A flavor in use cannot change size or SLA; create a new flavor.")
        super().save(*args, **kwargs)


class InstanceState(models.TextChoices):
    BUILDING = "building", "Building"
    RUNNING = "running", "Running"
    STOPPING = "stopping", "Stopping"
    STOPPED = "stopped", "Stopped"
    STARTING = "starting", "Starting"
    REBOOTING = "rebooting", "Rebooting"
    RESIZING = "resizing", "Resizing"
    REBUILDING = "rebuilding", "Rebuilding"
    SNAPSHOTTING = "snapshotting", "Snapshotting"
    DELETING = "deleting", "Deleting"
    DELETED = "deleted", "Deleted"
    ERROR = "error", "Error"
    DETACHING_ISO = "detaching_iso", "Detaching ISO"
    RESCUING = "rescuing", "Entering rescue"
    RESCUE = "rescue", "Rescue"
    UNRESCUING = "unrescuing", "Leaving rescue"
    MIGRATING = "migrating", "Migrating"
    # Its host is down (declared dead: compute.upkeep); it waits for the host to return.
    HOST_DOWN = "host_down", "Host down"
    # Its host died, and it is being started on another host from its shared disk.
    EVACUATING = "evacuating", "Restarting on another host"


class Instance(models.Model):
    """A virtual machine. Its UUID is the libvirt domain UUID; every libvirt name derives from it."""

    State = InstanceState

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="instances")
    name = models.CharField(max_length=255)
    image = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="instances")
    flavor = models.ForeignKey(Flavor, null=True, blank=True, on_delete=models.PROTECT, related_name="instances")
    # The size and SLA as created (or last resized), so billing never shifts under it.
    vcpus = models.PositiveIntegerField()
    memory_mb = models.PositiveIntegerField()
    disk_gb = models.PositiveIntegerField()
    bandwidth_mbit = models.PositiveIntegerField()
    traffic_gb = models.PositiveIntegerField()
    sla_percent = models.DecimalField(max_digits=6, decimal_places=3)
    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="instances")
    state = models.CharField(max_length=16, choices=InstanceState.choices, default=InstanceState.BUILDING)
    power_state = models.CharField(max_length=16, default="nostate")
    ip_address = models.GenericIPAddressField()
    mac_address = models.CharField(max_length=17, unique=True)
    vnc_port = models.PositiveIntegerField(null=True, blank=True)
    user_data = models.TextField(blank=True)
    ssh_keys = models.JSONField(default=list, blank=True, help_text="Public keys as given at create")
    # The SHA-512 crypt hash of the password chosen at create, kept only until the build wrote
    # it into the seed (never the password itself).
    password_hash = models.CharField(max_length=200, blank=True)
    # The install ISO attached as a CD-ROM (booted before the disk) until the customer detaches it.
    iso = models.ForeignKey(Image, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # What an in-flight action will do when it runs, e.g. the new size of a resize.
    pending = models.JSONField(default=dict, blank=True)
    error_step = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    # Its disk (and seed) live in its host's shared pool (an HA flavor), not the local one.
    shared_disk = models.BooleanField(default=False)
    throttled = models.BooleanField(default=False)
    # The rate (KiB/s each way) it is throttled to, kept so a redefine (resize, rebuild) keeps it.
    throttle_kbytes = models.PositiveIntegerField(null=True, blank=True)
    # Stopped because its tenant was suspended; started again when the tenant is reactivated.
    stopped_by_suspension = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    launched_at = models.DateTimeField(null=True, blank=True)
    # The first label of its DNS name (<label>.<tenant>.<zone>): the name made DNS-safe, and
    # unique among the tenant's live instances (compute.dns).
    dns_label = models.CharField(max_length=63, blank=True)
    # Its firewall: the tenant's security groups it is a member of (compute.security_groups).
    security_groups = models.ManyToManyField("SecurityGroup", related_name="instances", blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "state"]),
            models.Index(fields=["host", "state"]),
            # The instance list: a tenant's live instances, newest first; with the id in it, a
            # page's ids come from the index alone.
            models.Index(
                fields=["tenant", "-created_at", "-id"], condition=~Q(state="deleted"), name="instance_live_page"
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"], condition=~Q(state="deleted"), name="instance_name_unique_live"
            ),
            models.UniqueConstraint(
                fields=["tenant", "dns_label"],
                condition=~Q(state="deleted") & ~Q(dns_label=""),
                name="instance_dns_label_unique_live",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"

    @property
    def domain_name(self) -> str:
        return f"inst-{self.id}"

    @property
    def is_live(self) -> bool:
        return self.state != InstanceState.DELETED


class InstanceTag(models.Model):
    """A label a tenant puts on an instance to find it in the list ("prod", "web", "team:db")."""

    id = models.BigAutoField(primary_key=True)
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=32)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["instance", "name"], name="instance_tag_unique")]
        indexes = [models.Index(fields=["name"])]

    def __str__(self) -> str:
        return self.name


class SecurityGroup(models.Model):
    """A tenant's named set of firewall rules; what its member instances may receive and send.
    Traffic no rule of an instance's groups allows is dropped."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="security_groups")
    name = models.CharField(max_length=64)
    description = models.CharField(max_length=200, blank=True)
    # The group every new instance joins unless the create names others (one per tenant).
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-is_default", "name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="security_group_name_unique"),
            models.UniqueConstraint(fields=["tenant"], condition=Q(is_default=True), name="security_group_one_default"),
        ]

    def __str__(self) -> str:
        return self.name


class SecurityGroupRule(models.Model):
    """One allowed kind of traffic: its direction, protocol, ports, and where the other end is
    (a CIDR, or the members of a group of the same tenant)."""

    class Direction(models.TextChoices):
        INGRESS = "ingress", "Inbound"
        EGRESS = "egress", "Outbound"

    class Protocol(models.TextChoices):
        TCP = "tcp", "TCP"
        UDP = "udp", "UDP"
        ICMP = "icmp", "ICMP"
        ANY = "any", "Any"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    group = models.ForeignKey(SecurityGroup, on_delete=models.CASCADE, related_name="rules")
    direction = models.CharField(max_length=8, choices=Direction.choices)
    protocol = models.CharField(max_length=8, choices=Protocol.choices)
    port_min = models.PositiveIntegerField(null=True, blank=True)
    port_max = models.PositiveIntegerField(null=True, blank=True)
    # The other end: a CIDR, or (when set) the current members of this group.
    cidr = models.CharField(max_length=43, blank=True)
    remote_group = models.ForeignKey(
        SecurityGroup, null=True, blank=True, on_delete=models.PROTECT, related_name="referencing_rules"
    )
    description = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        ports = f" {self.port_min}-{self.port_max}" if self.port_min is not None else ""
        peer = f"group {self.remote_group_id}" if self.remote_group_id else self.cidr
        return f"{self.direction} {self.protocol}{ports} {peer}"


class InstanceAction(models.Model):
    """The event log of an instance: one row per requested action (step "") and per step run."""

    class Status(models.TextChoices):
        REQUESTED = "requested", "Requested"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    id = models.BigAutoField(primary_key=True)
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="actions")
    action = models.CharField(max_length=20)
    step = models.CharField(max_length=40, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    token = models.ForeignKey(ApiToken, null=True, blank=True, on_delete=models.SET_NULL)
    started_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    detail = models.JSONField(default=dict, blank=True)
    # The web request (X-Request-ID) this row's work came from, to find its log lines; set by
    # the web layer's tracing (portal/logs.py) when the row is first saved.
    request_id = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["started_at", "id"]
        indexes = [models.Index(fields=["instance", "started_at"])]

    def __str__(self) -> str:
        return f"{self.action} {self.step} {self.status}".replace("  ", " ")


class IdempotencyKey(models.Model):
    """A client's Idempotency-Key for instance create, kept at least 24 hours."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    instance = models.ForeignKey(Instance, null=True, on_delete=models.CASCADE, related_name="+")
    # A bulk create's instances (their ids, in order); empty when the request made one.
    batch = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "key"], name="idempotency_key_unique")]

    def __str__(self) -> str:
        return self.key


class InstanceStateLog(models.Model):
    """When an instance settled into running, stopped, error or deleted, and at what size.

    Billing reads running and stopped time, and SLA downtime, from these rows, so they are
    written by the same conditional UPDATE that moves the state (compute.history).
    """

    id = models.BigAutoField(primary_key=True)
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="state_log")
    at = models.DateTimeField(db_index=True)
    state = models.CharField(max_length=16, choices=InstanceState.choices)
    flavor = models.ForeignKey(Flavor, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    vcpus = models.PositiveIntegerField()
    memory_mb = models.PositiveIntegerField()
    disk_gb = models.PositiveIntegerField()
    # Who caused it: "tenant" (an action or the guest itself), "system" (a failure, the host).
    cause = models.CharField(max_length=8, default="tenant")

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["instance", "at"])]

    def __str__(self) -> str:
        return f"{self.instance_id} {self.state} at {self.at:%Y-%m-%d %H:%M:%S}"


class HostStatusLog(models.Model):
    """When a host went up or down (for SLA downtime)."""

    id = models.BigAutoField(primary_key=True)
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="status_log")
    at = models.DateTimeField(db_index=True)
    status = models.CharField(max_length=16, choices=Host.Status.choices)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.host_id} {self.status} at {self.at:%Y-%m-%d %H:%M:%S}"
