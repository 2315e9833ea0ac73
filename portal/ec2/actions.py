"""EC2's actions, each on the same services and selectors as the REST API.

A handler takes the Call (actor and parameters) and returns the body of its XML answer, or
raises an Ec2Error. Refusals of the services (base.errors) become EC2 codes in one place,
portal.ec2.errors.from_refusal.

Mapping choices, documented in the README's "Using the AWS CLI":
- a tag `Key=k, Value=v` is our instance tag "k:v" (lower case, as our tags are), a tag with an
  empty value is "k"; the tag `Name` is the instance's name;
- every instance is its own reservation, `r-` + the instance's UUID;
- one availability zone, the region's name + "a".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from django.conf import settings
from django.core import signing
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from base.errors import Conflict, Refused
from compute import services
from compute.models import Flavor, Image, Instance, InstanceState, InstanceTag
from compute.selectors import images_visible_filter
from compute.sizing import Size
from portal.ec2 import ids
from portal.ec2.errors import Ec2Error, from_refusal, invalid_value, missing
from tenants import services as tenant_services
from tenants.access import Actor
from tenants.models import Role, SshKey

COMMON = {"Action", "Version", "DryRun"}
MAX_RUN = 20
TERMINATED_VISIBLE = timedelta(hours=1)

# Our states as EC2's (name, code). In-flight work that ends in a running or stopped guest
# (start, resize, rebuild, ...) is pending; a reboot keeps it running, as EC2's does.
STATES = {
    InstanceState.BUILDING: ("pending", 0),
    InstanceState.STARTING: ("pending", 0),
    InstanceState.RUNNING: ("running", 16),
    InstanceState.REBOOTING: ("running", 16),
    InstanceState.RESCUE: ("running", 16),
    InstanceState.RESIZING: ("pending", 0),
    InstanceState.REBUILDING: ("pending", 0),
    InstanceState.SNAPSHOTTING: ("pending", 0),
    InstanceState.DETACHING_ISO: ("pending", 0),
    InstanceState.RESCUING: ("pending", 0),
    InstanceState.UNRESCUING: ("pending", 0),
    InstanceState.DELETING: ("shutting-down", 32),
    InstanceState.DELETED: ("terminated", 48),
    InstanceState.STOPPING: ("stopping", 64),
    InstanceState.STOPPED: ("stopped", 80),
    # EC2 has no error state: the guest is not running, and stateReason says why.
    InstanceState.ERROR: ("stopped", 80),
}
EC2_STATE_NAMES = {"pending", "running", "shutting-down", "terminated", "stopping", "stopped"}


@dataclass
class Call:
    actor: Actor
    params: dict[str, str]
    endpoint: str
    used: set[str] = field(default_factory=set)

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.params.get(name, default)

    def required(self, name: str) -> str:
        value = self.params.get(name)
        if value is None or value == "":
            raise missing(name)
        return value

    def integer(self, name: str, default: int | None = None, *, low: int, high: int) -> int | None:
        raw = self.params.get(name)
        if raw is None:
            return default
        if not re.fullmatch(r"\d{1,9}", raw) or not low <= int(raw) <= high:
            raise invalid_value(f"{name} must be a whole number from {low} to {high}.")
        return int(raw)

    def members(self, prefix: str) -> list[str]:
        """Values of `Prefix.1`, `Prefix.2`, ... in their numeric order."""
        found = []
        for name, value in self.params.items():
            match = re.fullmatch(re.escape(prefix) + r"\.(\d{1,6})", name)
            if match:
                found.append((int(match[1]), value))
        return [value for _n, value in sorted(found)]

    def structs(self, prefix: str) -> list[dict[str, str]]:
        """`Prefix.N.Field...` as one dict (Field... -> value) per N, in order."""
        groups: dict[int, dict[str, str]] = {}
        for name, value in self.params.items():
            match = re.fullmatch(re.escape(prefix) + r"\.(\d{1,6})\.(.+)", name)
            if match:
                groups.setdefault(int(match[1]), {})[match[2]] = value
        return [groups[n] for n in sorted(groups)]

    def filters(self) -> list[tuple[str, list[str]]]:
        out = []
        for group in self.structs("Filter"):
            name = group.get("Name")
            if not name:
                raise missing("Filter.N.Name")
            values = [v for k, v in sorted(group.items(), key=_member_order) if k.startswith("Value.")]
            out.append((name, values))
        return out


def _member_order(item: tuple[str, str]) -> tuple[int, str]:
    name = item[0]
    tail = name.rsplit(".", 1)[-1]
    return (int(tail), name) if tail.isdigit() else (0, name)


def _check_names(call: Call, allowed: set[str]) -> None:
    for name in call.params:
        if name.split(".", 1)[0] not in allowed | COMMON:
            # EC2 parameters this endpoint does not take (security groups, subnets, volumes...)
            # are refused rather than ignored: a script must not believe it got them.
            raise invalid_value(f"The parameter {name[:80]} is not supported by this endpoint.")


def _zone() -> str:
    return f"{settings.EC2_REGION}a"


# -- tags ---------------------------------------------------------------------------------------


def split_tag(tag: str) -> tuple[str, str]:
    key, _sep, value = tag.partition(":")
    return key, value


def join_tag(key: str, value: str) -> str:
    key, value = key.strip().lower(), (value or "").strip().lower()
    if not key or ":" in key:
        raise invalid_value(f"A tag key is 1 to 32 letters, digits, '-', '_' or '.' (not {key[:40]!r}).")
    return f"{key}:{value}" if value else key


def _tag_set(instance: Instance, tags: list[str]) -> list[dict]:
    items = [{"key": "Name", "value": instance.name}]
    items += [{"key": k, "value": v} for k, v in map(split_tag, sorted(tags))]
    return items


# -- instances ----------------------------------------------------------------------------------


def _instances(actor: Actor):
    """The tenant's instances EC2 still shows: live ones, and deleted ones for an hour."""
    recent = timezone.now() - TERMINATED_VISIBLE
    return (
        Instance.objects.filter(tenant=actor.tenant)
        .filter(~Q(state=InstanceState.DELETED) | Q(deleted_at__gte=recent))
        .select_related("flavor")
    )


def _find_instances(call: Call, prefix: str = "InstanceId") -> list[Instance]:
    wanted = call.members(prefix)
    if not wanted:
        raise missing(f"{prefix}.1")
    pks = [ids.parse("instance", value, "InvalidInstanceID.NotFound") for value in wanted]
    found = {i.pk: i for i in _instances(call.actor).filter(pk__in=pks)}
    absent = [value for value, pk in zip(wanted, pks, strict=True) if pk not in found]
    if absent:
        raise Ec2Error("InvalidInstanceID.NotFound", f"The instance IDs '{', '.join(absent)}' do not exist")
    return [found[pk] for pk in pks]


def _key_names(actor: Actor) -> dict[str, str]:
    return dict(SshKey.objects.filter(tenant=actor.tenant).values_list("public_key", "name"))


def _state(instance: Instance) -> dict:
    name, code = STATES.get(instance.state, ("pending", 0))
    return {"code": code, "name": name}


def present_instance(instance: Instance, tags: list[str], key_names: dict[str, str], index: int = 0) -> dict:
    launched = instance.launched_at or instance.created_at
    key = next((key_names[k] for k in instance.ssh_keys if k in key_names), None)
    ip = instance.ip_address
    body = {
        "instanceId": ids.ec2_id("instance", instance.pk),
        "imageId": ids.ec2_id("image", instance.image_id),
        "instanceState": _state(instance),
        "privateDnsName": f"ip-{ip.replace('.', '-')}.{settings.EC2_REGION}.compute.internal",
        "dnsName": "",
        "reason": instance.error_message[:200] if instance.state == InstanceState.ERROR else "",
        "keyName": key,
        "amiLaunchIndex": index,
        "productCodes": None,
        "instanceType": instance.flavor.name if instance.flavor else f"custom-{instance.vcpus}c-{instance.memory_mb}m",
        "launchTime": launched.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "placement": {"availabilityZone": _zone(), "groupName": "", "tenancy": "default"},
        "monitoring": {"state": "disabled"},
        "privateIpAddress": ip,
        "groupSet": None,
        "architecture": "x86_64",
        "rootDeviceType": "ebs",
        "rootDeviceName": "/dev/vda",
        "virtualizationType": "hvm",
        "hypervisor": "kvm",
        "tagSet": _tag_set(instance, tags),
    }
    if instance.state == InstanceState.ERROR:
        body["stateReason"] = {"code": "Server.InternalError", "message": instance.error_message[:200]}
    return body


def _tags_of(instances: list[Instance]) -> dict:
    tags: dict = {i.pk: [] for i in instances}
    for instance_id, name in InstanceTag.objects.filter(instance__in=instances).values_list("instance_id", "name"):
        tags[instance_id].append(name)
    return tags


def _reservations(call: Call, instances: list[Instance]) -> list[dict]:
    tags, keys = _tags_of(instances), _key_names(call.actor)
    return [
        {
            "reservationId": ids.ec2_id("reservation", i.pk),
            "ownerId": call.actor.tenant.pk.hex[:12],
            "groupSet": None,
            "instancesSet": [present_instance(i, tags[i.pk], keys)],
        }
        for i in instances
    ]


def _filter_instances(queryset, filters: list[tuple[str, list[str]]]):
    for name, values in filters:
        if name == "instance-id":
            pks = [ids.parse("instance", v, "InvalidInstanceID.NotFound") for v in values]
            queryset = queryset.filter(pk__in=pks)
        elif name == "instance-state-name":
            unknown = set(values) - EC2_STATE_NAMES
            if unknown:
                raise invalid_value(f"Unknown instance-state-name {sorted(unknown)[0][:40]!r}.")
            queryset = queryset.filter(state__in=[s for s, (n, _c) in STATES.items() if n in values])
        elif name.startswith("tag:"):
            key = name[4:]
            if key == "Name":
                queryset = queryset.filter(name__in=values)
            else:
                tagged = InstanceTag.objects.filter(name__in=[join_tag(key, v) for v in values])
                queryset = queryset.filter(pk__in=tagged.values("instance_id"))
        elif name == "tag-key":
            keys = [v.strip().lower() for v in values]
            condition = Q()
            for key in keys:
                condition |= Q(name=key) | Q(name__startswith=f"{key}:")
            if "Name" not in values:
                queryset = queryset.filter(pk__in=InstanceTag.objects.filter(condition).values("instance_id"))
        else:
            raise invalid_value(f"The filter '{name[:60]}' is invalid")
    return queryset


NEXT_SALT = "portal.ec2.next-token"


def describe_instances(call: Call) -> dict:
    _check_names(call, {"InstanceId", "Filter", "MaxResults", "NextToken"})
    max_results = call.integer("MaxResults", low=5, high=1000)
    if max_results is not None and call.members("InstanceId"):
        raise invalid_value("MaxResults cannot be given with InstanceId.")
    if call.members("InstanceId"):
        instances = _find_instances(call)
        instances = list(
            _filter_instances(_instances(call.actor).filter(pk__in=[i.pk for i in instances]), call.filters())
        )
        return {"reservationSet": _reservations(call, sorted(instances, key=lambda i: (i.created_at, i.pk)))}
    queryset = _filter_instances(_instances(call.actor), call.filters()).order_by("created_at", "id")
    if token := call.get("NextToken"):
        try:
            after = signing.loads(token, salt=NEXT_SALT)
            queryset = queryset.filter(Q(created_at__gt=after["t"]) | Q(created_at=after["t"], id__gt=after["i"]))
        except (signing.BadSignature, KeyError, TypeError, ValueError):
            raise invalid_value("The NextToken is not one this endpoint gave out.") from None
    limit = max_results or 1000
    page = list(queryset[: limit + 1])
    body: dict = {"reservationSet": _reservations(call, page[:limit])}
    if len(page) > limit:
        last = page[limit - 1]
        body["nextToken"] = signing.dumps({"t": last.created_at.isoformat(), "i": str(last.pk)}, salt=NEXT_SALT)
    return body


def _user_data(call: Call) -> str:
    raw = call.get("UserData")
    if not raw:
        return ""
    try:
        return base64.b64decode(raw, validate=True).decode()
    except (binascii.Error, ValueError):
        raise invalid_value("UserData must be base64 of UTF-8 text.") from None


def _run_tags(call: Call) -> tuple[str | None, list[str]]:
    name, tags = None, []
    for spec in call.structs("TagSpecification"):
        if spec.get("ResourceType", "instance") != "instance":
            raise invalid_value("Only instances can be tagged here (ResourceType instance).")
        pairs: dict[int, dict[str, str]] = {}
        for field_name, value in spec.items():
            match = re.fullmatch(r"Tag\.(\d{1,6})\.(Key|Value)", field_name)
            if match:
                pairs.setdefault(int(match[1]), {})[match[2]] = value
        for pair in (pairs[n] for n in sorted(pairs)):
            if pair.get("Key") == "Name":
                name = pair.get("Value", "")
            else:
                tags.append(join_tag(pair.get("Key", ""), pair.get("Value", "")))
    return name, tags


def run_instances(call: Call) -> dict:
    _check_names(
        call,
        {"ImageId", "InstanceType", "MinCount", "MaxCount", "KeyName", "UserData", "ClientToken"}
        | {"TagSpecification", "Placement"},
    )
    if not call.actor.tenant.is_active:
        raise Ec2Error("Blocked", "This tenant is suspended and cannot create instances.", 403)
    image_pk = ids.parse("image", call.required("ImageId"), "InvalidAMIID.NotFound")
    type_name = call.required("InstanceType")
    flavor = Flavor.objects.filter(name=type_name, active=True).first()
    if flavor is None:
        raise invalid_value(f"The instance type '{type_name[:60]}' does not exist.")
    min_count = call.integer("MinCount", low=1, high=MAX_RUN)
    max_count = call.integer("MaxCount", low=1, high=MAX_RUN)
    if min_count is None or max_count is None:
        raise missing("MinCount" if min_count is None else "MaxCount")
    if min_count > max_count:
        raise invalid_value("MinCount must not be more than MaxCount.")
    zone = call.get("Placement.AvailabilityZone")
    if zone and zone != _zone():
        raise invalid_value(f"Unknown availability zone {zone[:40]!r}; this region has {_zone()}.")
    key_ids: tuple[str, ...] = ()
    if key_name := call.get("KeyName"):
        key = SshKey.objects.filter(tenant=call.actor.tenant, name=key_name).first()
        if key is None:
            raise Ec2Error("InvalidKeyPair.NotFound", f"The key pair '{key_name[:100]}' does not exist")
        key_ids = (str(key.pk),)
    user_data = _user_data(call)
    name_tag, tags = _run_tags(call)
    token = call.get("ClientToken") or ""
    if len(token) > 64:
        raise invalid_value("ClientToken has at most 64 characters.")
    # A replayed ClientToken must make the same request body (the name included) to be found.
    stem = name_tag or f"ec2-{hashlib.sha256(token.encode()).hexdigest()[:10] if token else secrets.token_hex(5)}"
    made = []
    try:
        with transaction.atomic():
            for n in range(max_count):
                request = services.CreateRequest(
                    name=stem if max_count == 1 else f"{stem}-{n + 1}",
                    image_id=str(image_pk),
                    size=Size.of_flavor(flavor),
                    flavor_id=str(flavor.pk),
                    ssh_key_ids=key_ids,
                    user_data=user_data,
                )
                try:
                    instance = services.instance_create(
                        actor=call.actor, request=request, idempotency_key=f"ec2:{token}:{n}" if token else None
                    )
                except Refused:
                    # Up to MinCount is all or nothing; past it, EC2 starts as many as it can.
                    if n >= min_count:
                        break
                    raise
                made.append(instance)
                if tags:
                    services.instance_set_tags(actor=call.actor, instance=instance, tags=tags)
    except Refused as exc:
        raise from_refusal(exc, conflict_code="InsufficientInstanceCapacity") from None
    instances = list(_instances(call.actor).filter(pk__in=[i.pk for i in made]))
    instances.sort(key=lambda i: [m.pk for m in made].index(i.pk))
    tag_map, keys = _tags_of(instances), _key_names(call.actor)
    first = instances[0]
    return {
        "reservationId": ids.ec2_id("reservation", first.pk),
        "ownerId": call.actor.tenant.pk.hex[:12],
        "groupSet": None,
        "instancesSet": [present_instance(i, tag_map[i.pk], keys, n) for n, i in enumerate(instances)],
    }


def _state_change(call: Call, action: Callable, settled: str) -> dict:
    """Start, stop or terminate each named instance: (current, previous) states as EC2 says.
    An instance already in the state asked for is left as it is, as EC2 does."""
    items = []
    for instance in _find_instances(call):
        previous = _state(instance)
        if instance.state != settled:
            try:
                instance = action(actor=call.actor, instance=instance)
            except Refused as exc:
                raise from_refusal(exc) from None
        items.append(
            {
                "instanceId": ids.ec2_id("instance", instance.pk),
                "currentState": _state(instance),
                "previousState": previous,
            }
        )
    return {"instancesSet": items}


def start_instances(call: Call) -> dict:
    _check_names(call, {"InstanceId", "AdditionalInfo"})
    return _state_change(call, services.instance_start, InstanceState.RUNNING)


def stop_instances(call: Call) -> dict:
    _check_names(call, {"InstanceId", "Force", "Hibernate"})
    if call.get("Hibernate", "false").lower() == "true":
        raise Ec2Error("UnsupportedOperation", "Hibernation is not supported.")
    return _state_change(call, services.instance_stop, InstanceState.STOPPED)


def terminate_instances(call: Call) -> dict:
    _check_names(call, {"InstanceId"})
    return _state_change(call, services.instance_delete, InstanceState.DELETED)


def reboot_instances(call: Call) -> dict:
    _check_names(call, {"InstanceId"})
    for instance in _find_instances(call):
        try:
            services.instance_reboot(actor=call.actor, instance=instance)
        except Refused as exc:
            raise from_refusal(exc) from None
    return {"return": True}


# -- images and instance types --------------------------------------------------------------------

IMAGE_STATES = {Image.State.ACTIVE: "available"}


def describe_images(call: Call) -> dict:
    _check_names(call, {"ImageId", "Owner", "Filter", "ExecutableBy", "IncludeDeprecated", "MaxResults", "NextToken"})
    images = Image.objects.filter(images_visible_filter(call.actor.tenant)).exclude(state=Image.State.DELETED)
    wanted = call.members("ImageId")
    if wanted:
        pks = [ids.parse("image", value, "InvalidAMIID.NotFound") for value in wanted]
        found = set(images.filter(pk__in=pks).values_list("pk", flat=True))
        absent = [value for value, pk in zip(wanted, pks, strict=True) if pk not in found]
        if absent:
            raise Ec2Error("InvalidAMIID.NotFound", f"The image id '[{', '.join(absent)}]' does not exist")
        images = images.filter(pk__in=pks)
    owners = call.members("Owner")
    if owners:
        kinds = {"self": Q(tenant=call.actor.tenant), "amazon": Q(visibility=Image.Visibility.PUBLIC)}
        condition = Q(pk__in=[])
        for owner in owners:
            condition |= kinds.get(owner, Q(pk__in=[]))
        images = images.filter(condition)
    for name, values in call.filters():
        if name == "name":
            images = images.filter(name__in=values)
        elif name == "image-id":
            images = images.filter(pk__in=[ids.parse("image", v, "InvalidAMIID.NotFound") for v in values])
        elif name == "is-public":
            images = images.filter(
                visibility__in=[Image.Visibility.PUBLIC if v == "true" else Image.Visibility.PRIVATE for v in values]
            )
        else:
            raise invalid_value(f"The filter '{name[:60]}' is invalid")
    return {
        "imagesSet": [
            {
                "imageId": ids.ec2_id("image", image.pk),
                "imageLocation": image.name,
                "imageState": IMAGE_STATES.get(image.state, "pending" if image.state != "failed" else "failed"),
                "imageOwnerId": image.tenant_id.hex[:12] if image.tenant_id else "portal",
                "creationDate": image.created_at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "isPublic": image.visibility == Image.Visibility.PUBLIC,
                "architecture": "x86_64",
                "imageType": "machine",
                "name": image.name,
                "description": f"{image.os_family} {image.os_version}".strip(),
                "rootDeviceType": "ebs",
                "rootDeviceName": "/dev/vda",
                "virtualizationType": "hvm",
                "hypervisor": "kvm",
                "platformDetails": "Linux/UNIX" if image.os_family == "linux" else image.os_family,
            }
            for image in images.order_by("name", "id")
        ]
    }


def describe_instance_types(call: Call) -> dict:
    _check_names(call, {"InstanceType", "Filter", "MaxResults", "NextToken"})
    flavors = Flavor.objects.filter(active=True).order_by("vcpus", "memory_mb", "name")
    wanted = call.members("InstanceType")
    if wanted:
        known = set(flavors.filter(name__in=wanted).values_list("name", flat=True))
        absent = [w for w in wanted if w not in known]
        if absent:
            raise Ec2Error(
                "InvalidInstanceType", f"The following supplied instance types do not exist: [{', '.join(absent)}]"
            )
        flavors = flavors.filter(name__in=wanted)
    if call.filters():
        raise invalid_value("DescribeInstanceTypes takes no filters here; name the types with InstanceType.N.")
    return {
        "instanceTypeSet": [
            {
                "instanceType": f.name,
                "currentGeneration": True,
                "bareMetal": False,
                "hypervisor": "kvm",
                "supportedRootDeviceTypes": ["ebs"],
                "supportedVirtualizationTypes": ["hvm"],
                "processorInfo": {"supportedArchitectures": ["x86_64"]},
                "vCpuInfo": {"defaultVCpus": f.vcpus},
                "memoryInfo": {"sizeInMiB": f.memory_mb},
                "instanceStorageSupported": True,
                "instanceStorageInfo": {"totalSizeInGB": f.disk_gb},
                "networkInfo": {"networkPerformance": f"{f.bandwidth_mbit} Mbit/s"},
            }
            for f in flavors
        ]
    }


# -- key pairs ----------------------------------------------------------------------------------------


def _key_item(key: SshKey) -> dict:
    return {
        "keyPairId": ids.ec2_id("key", key.pk),
        "keyName": key.name,
        "keyFingerprint": key.fingerprint,
        "keyType": "rsa" if key.public_key.startswith("ssh-rsa") else "ed25519",
        "createTime": key.created_at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }


def _add_key(call: Call, name: str, public_key: str) -> SshKey:
    if not name or len(name) > 100:
        raise invalid_value("KeyName has 1 to 100 characters.")
    try:
        return tenant_services.sshkey_create(actor=call.actor, name=name, public_key=public_key)
    except Conflict:
        raise Ec2Error("InvalidKeyPair.Duplicate", f"The keypair '{name[:100]}' already exists.") from None
    except Refused as exc:
        raise from_refusal(exc) from None


def create_key_pair(call: Call) -> dict:
    _check_names(call, {"KeyName", "KeyType", "KeyFormat", "TagSpecification"})
    name = call.required("KeyName")
    kind = call.get("KeyType", "rsa")
    if call.get("KeyFormat", "pem") != "pem":
        raise invalid_value("Only KeyFormat pem is supported.")
    if kind == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
        material = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    elif kind == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        material = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    else:
        raise invalid_value("KeyType is rsa or ed25519.")
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    # The private key is in this answer only; we keep the public half.
    key = _add_key(call, name, public.decode())
    return {**_key_item(key), "keyMaterial": material.decode()}


def import_key_pair(call: Call) -> dict:
    _check_names(call, {"KeyName", "PublicKeyMaterial", "TagSpecification"})
    name = call.required("KeyName")
    try:
        public = base64.b64decode(call.required("PublicKeyMaterial"), validate=True).decode().strip()
    except (binascii.Error, ValueError):
        raise invalid_value("PublicKeyMaterial must be base64 of an OpenSSH public key line.") from None
    key = _add_key(call, name, public)
    return _key_item(key)


def _find_keys(call: Call):
    keys = SshKey.objects.filter(tenant=call.actor.tenant)
    names, pair_ids = call.members("KeyName"), call.members("KeyPairId")
    if names:
        known = set(keys.filter(name__in=names).values_list("name", flat=True))
        if absent := [n for n in names if n not in known]:
            raise Ec2Error("InvalidKeyPair.NotFound", f"The key pair '{absent[0][:100]}' does not exist")
        keys = keys.filter(name__in=names)
    if pair_ids:
        pks = [ids.parse("key", v, "InvalidKeyPair.NotFound") for v in pair_ids]
        if keys.filter(pk__in=pks).count() != len(set(pks)):
            raise Ec2Error("InvalidKeyPair.NotFound", "A key pair id does not exist.")
        keys = keys.filter(pk__in=pks)
    return keys


def describe_key_pairs(call: Call) -> dict:
    _check_names(call, {"KeyName", "KeyPairId", "Filter", "IncludePublicKey"})
    keys = _find_keys(call)
    for name, values in call.filters():
        if name != "key-name":
            raise invalid_value(f"The filter '{name[:60]}' is invalid")
        keys = keys.filter(name__in=values)
    include = call.get("IncludePublicKey", "false").lower() == "true"
    return {"keySet": [{**_key_item(k), "publicKey": k.public_key if include else None} for k in keys.order_by("name")]}


def delete_key_pair(call: Call) -> dict:
    _check_names(call, {"KeyName", "KeyPairId"})
    keys = SshKey.objects.filter(tenant=call.actor.tenant)
    if name := call.get("KeyName"):
        keys = keys.filter(name=name)
    elif pair_id := call.get("KeyPairId"):
        keys = keys.filter(pk=ids.parse("key", pair_id, "InvalidKeyPair.NotFound"))
    else:
        raise missing("KeyName")
    # EC2 answers true for a key that is not there.
    for key in keys:
        tenant_services.sshkey_delete(actor=call.actor, key=key)
    return {"return": True}


# -- tags -----------------------------------------------------------------------------------------------


def _tag_pairs(call: Call) -> list[tuple[str, str | None]]:
    """(key, value) of each Tag.N; the value None when it was left out."""
    pairs = [(t.get("Key", ""), t.get("Value")) for t in call.structs("Tag")]
    if any(not key for key, _v in pairs):
        raise missing("Tag.N.Key")
    return pairs


def _resources(call: Call) -> list[Instance]:
    resources = call.members("ResourceId")
    if not resources:
        raise missing("ResourceId.1")
    for value in resources:
        if not value.startswith("i-"):
            raise invalid_value(f"Only instances have tags here, not {value[:60]!r}.")
    return _find_instances(call, "ResourceId")


def _retag(call: Call, change: Callable[[Instance, list[str]], tuple[str | None, list[str]]]) -> dict:
    try:
        for instance in _resources(call):
            current = list(instance.tags.values_list("name", flat=True))
            name, tags = change(instance, current)
            if name is not None and name != instance.name:
                services.instance_rename(actor=call.actor, instance=instance, name=name)
            if sorted(tags) != sorted(current):
                services.instance_set_tags(actor=call.actor, instance=instance, tags=tags)
    except Refused as exc:
        raise from_refusal(exc, conflict_code="InvalidParameterValue") from None
    return {"return": True}


def create_tags(call: Call) -> dict:
    _check_names(call, {"ResourceId", "Tag"})
    pairs = _tag_pairs(call)
    if not pairs:
        raise missing("Tag.1.Key")

    def change(instance: Instance, current: list[str]) -> tuple[str | None, list[str]]:
        name, tags = None, {split_tag(t)[0]: t for t in current}
        for key, value in pairs:
            if key == "Name":
                name = value or ""
            else:
                tag = join_tag(key, value or "")
                tags[split_tag(tag)[0]] = tag
        return name, list(tags.values())

    return _retag(call, change)


def delete_tags(call: Call) -> dict:
    _check_names(call, {"ResourceId", "Tag"})
    pairs = _tag_pairs(call)

    def change(instance: Instance, current: list[str]) -> tuple[str | None, list[str]]:
        # No Tag.N: every tag goes (the Name stays: it is the instance's name). A Tag.N
        # without a value removes the key whatever its value; with one, only that value.
        if not pairs:
            return None, []
        doomed = [(k.strip().lower(), None if v is None else v.strip().lower()) for k, v in pairs if k != "Name"]

        def gone(tag: str) -> bool:
            key, value = split_tag(tag)
            return any(k == key and (v is None or v == value) for k, v in doomed)

        return None, [tag for tag in current if not gone(tag)]

    return _retag(call, change)


def describe_tags(call: Call) -> dict:
    _check_names(call, {"Filter", "MaxResults", "NextToken"})
    instances = _instances(call.actor).exclude(state=InstanceState.DELETED)
    keys: list[str] | None = None
    values: list[str] | None = None
    for name, wanted in call.filters():
        if name == "resource-id":
            instances = instances.filter(
                pk__in=[ids.parse("instance", v, "InvalidInstanceID.NotFound") for v in wanted]
            )
        elif name == "resource-type":
            if "instance" not in wanted:
                instances = instances.none()
        elif name == "key":
            keys = wanted
        elif name == "value":
            values = wanted
        else:
            raise invalid_value(f"The filter '{name[:60]}' is invalid")
    rows = list(instances.order_by("created_at", "id"))
    tags = _tags_of(rows)
    items = []
    for instance in rows:
        for item in _tag_set(instance, tags[instance.pk]):
            if item["key"] == "Name" and item["value"] is None:
                continue
            if keys is not None and item["key"] not in keys:
                continue
            if values is not None and item["value"] not in values:
                continue
            items.append({"resourceId": ids.ec2_id("instance", instance.pk), "resourceType": "instance", **item})
    return {"tagSet": items}


# -- regions and zones ---------------------------------------------------------------------------------


def describe_regions(call: Call) -> dict:
    _check_names(call, {"RegionName", "Filter", "AllRegions"})
    wanted = call.members("RegionName")
    if wanted and settings.EC2_REGION not in wanted:
        raise invalid_value(f"Unknown region; this endpoint serves {settings.EC2_REGION}.")
    return {
        "regionInfo": [
            {"regionName": settings.EC2_REGION, "regionEndpoint": call.endpoint, "optInStatus": "opt-in-not-required"}
        ]
    }


def describe_availability_zones(call: Call) -> dict:
    _check_names(call, {"ZoneName", "ZoneId", "Filter", "AllAvailabilityZones"})
    wanted = call.members("ZoneName")
    if wanted and _zone() not in wanted:
        raise invalid_value(f"Unknown availability zone; this region has {_zone()}.")
    return {
        "availabilityZoneInfo": [
            {
                "zoneName": _zone(),
                "zoneState": "available",
                "regionName": settings.EC2_REGION,
                "zoneId": f"{settings.EC2_REGION}-az1",
                "zoneType": "availability-zone",
                "optInStatus": "opt-in-not-required",
                "messageSet": None,
            }
        ]
    }


# Action -> (handler, whether it writes).
ACTIONS: dict[str, tuple[Callable[[Call], dict], bool]] = {
    "RunInstances": (run_instances, True),
    "DescribeInstances": (describe_instances, False),
    "StartInstances": (start_instances, True),
    "StopInstances": (stop_instances, True),
    "RebootInstances": (reboot_instances, True),
    "TerminateInstances": (terminate_instances, True),
    "DescribeImages": (describe_images, False),
    "DescribeInstanceTypes": (describe_instance_types, False),
    "CreateKeyPair": (create_key_pair, True),
    "ImportKeyPair": (import_key_pair, True),
    "DescribeKeyPairs": (describe_key_pairs, False),
    "DeleteKeyPair": (delete_key_pair, True),
    "CreateTags": (create_tags, True),
    "DeleteTags": (delete_tags, True),
    "DescribeTags": (describe_tags, False),
    "DescribeRegions": (describe_regions, False),
    "DescribeAvailabilityZones": (describe_availability_zones, False),
}


def writes(action: str) -> bool:
    return ACTIONS.get(action, (None, False))[1]


def perform(call: Call, action: str) -> dict:
    if action not in ACTIONS:
        raise Ec2Error("UnsupportedOperation", f"The action {action[:60]!r} is not supported by this endpoint.")
    handler, writes = ACTIONS[action]
    if writes and not call.actor.may_write(Role.MEMBER):
        why = "a read-only access key" if call.actor.token_read_only else f"the role {call.actor.role}"
        raise Ec2Error("UnauthorizedOperation", f"You are not authorized to perform this operation ({why}).", 403)
    if call.get("DryRun", "false").lower() == "true":
        raise Ec2Error("DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412)
    return handler(call)
