"""Security groups: a tenant's firewall, shared by the API, the pages and the instance create.

A group is a set of allow rules; an instance's traffic is what the rules of its groups allow,
and nothing else (compute.firewall turns them into each host's packet filters). Every write
is atomic and audited, and after commit has the tenant's hosts apply their filters again, so a
change reaches running guests within seconds, without a reboot. Each tenant has a default
group, made when first needed: SSH and ICMP in from anywhere, everything out, and anything
from the group's own members.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from base.errors import Conflict, Invalid
from compute import firewall
from compute.models import Instance, InstanceState, SecurityGroup, SecurityGroupRule
from compute.row_locks import lock_instance
from tenants.access import Actor
from tenants.services import audit

DEFAULT_NAME = "default"
# Stored as it is (English); the pages show it in the reader's language.
DEFAULT_DESCRIPTION = "SSH and ICMP from anywhere, all traffic between members, everything out"
R = SecurityGroupRule
NAME_MAX = 64


@dataclass(frozen=True)
class RuleRequest:
    direction: str
    protocol: str
    port_min: int | None = None
    port_max: int | None = None
    cidr: str = ""
    remote_group_id: str | None = None
    description: str = ""


def _default_rules(group: SecurityGroup) -> list[SecurityGroupRule]:
    ingress, egress = R.Direction.INGRESS, R.Direction.EGRESS
    return [
        R(group=group, direction=ingress, protocol=R.Protocol.TCP, port_min=22, port_max=22, cidr="0.0.0.0/0"),
        R(group=group, direction=ingress, protocol=R.Protocol.ICMP, cidr="0.0.0.0/0"),
        R(group=group, direction=ingress, protocol=R.Protocol.ANY, remote_group=group),
        R(group=group, direction=egress, protocol=R.Protocol.ANY, cidr="0.0.0.0/0"),
    ]


def default_group(tenant) -> SecurityGroup:
    """The tenant's default group, made with its rules the first time it is needed."""
    group = SecurityGroup.objects.filter(tenant=tenant, is_default=True).first()
    if group is not None:
        return group
    try:
        with transaction.atomic():
            group = SecurityGroup.objects.create(
                tenant=tenant,
                name=DEFAULT_NAME,
                is_default=True,
                description=DEFAULT_DESCRIPTION,
            )
            R.objects.bulk_create(_default_rules(group))
            return group
    except IntegrityError:  # made meanwhile by another request (or a group is called "default")
        existing = SecurityGroup.objects.filter(tenant=tenant, is_default=True).first()
        if existing is None:
            raise Conflict(_('A group named "default" exists that is not the default group; rename it.')) from None
        return existing


def _is_uuid(value) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def resolve_group(tenant, group_id, field: str = "security_group_id") -> SecurityGroup:
    """A group of the tenant, or the same refusal for another tenant's and a missing one."""
    group = SecurityGroup.objects.filter(tenant=tenant, pk=group_id).first() if _is_uuid(group_id) else None
    if group is None:
        raise Invalid(field, _("Unknown security group."))
    return group


def groups_for_create(tenant, group_ids) -> list[SecurityGroup]:
    """The groups a new instance joins: those named (all the tenant's), else the default one."""
    if group_ids is None:
        return [default_group(tenant)]
    wanted = {str(g) for g in group_ids}
    return [resolve_group(tenant, g, "security_group_ids") for g in sorted(wanted)]


def _check_name(tenant, name: str, *, other_than=None) -> str:
    name = (name or "").strip()
    if not name or len(name) > NAME_MAX or not name.isprintable():
        raise Invalid("name", _("Give a name of 1 to %(most)d printable characters.") % {"most": NAME_MAX})
    taken = SecurityGroup.objects.filter(tenant=tenant, name=name)
    if other_than is not None:
        taken = taken.exclude(pk=other_than.pk)
    if taken.exists():
        raise Invalid("name", _("A security group with this name already exists in this tenant."))
    return name


def _check_description(description: str | None) -> str:
    description = (description or "").strip()
    if len(description) > 200 or not description.isprintable():
        raise Invalid("description", _("A description has up to 200 printable characters."))
    return description


def _port(value, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise Invalid(field, _("A port is a whole number from 1 to 65535."))
    return value


def clean_rule(tenant, request: RuleRequest) -> dict:
    """The rule's fields, checked; Invalid naming the first field that is wrong."""
    if request.direction not in R.Direction.values:
        raise Invalid("direction", _("Direction is one of: %(choices)s.") % {"choices": ", ".join(R.Direction.values)})
    if request.protocol not in R.Protocol.values:
        raise Invalid("protocol", _("Protocol is one of: %(choices)s.") % {"choices": ", ".join(R.Protocol.values)})
    port_min = port_max = None
    if request.port_min is not None or request.port_max is not None:
        if request.protocol not in (R.Protocol.TCP, R.Protocol.UDP):
            raise Invalid("port_min", _("Ports apply to tcp and udp rules only."))
        port_min = _port(request.port_min if request.port_min is not None else request.port_max, "port_min")
        port_max = _port(request.port_max if request.port_max is not None else port_min, "port_max")
        if port_max < port_min:
            raise Invalid("port_max", _("port_max is lower than port_min."))
    remote = None
    cidr = (request.cidr or "").strip()
    if request.remote_group_id:
        if cidr:
            raise Invalid("remote_group_id", _("Give either a CIDR or a source group, not both."))
        remote = resolve_group(tenant, request.remote_group_id, "remote_group_id")
    else:
        try:
            network = ipaddress.IPv4Network(cidr or "0.0.0.0/0", strict=False)
        except ValueError:
            raise Invalid("cidr", _("Give an IPv4 network such as 203.0.113.0/24 or 0.0.0.0/0.")) from None
        cidr = str(network)
    description = _check_description(request.description)
    return {
        "direction": request.direction,
        "protocol": request.protocol,
        "port_min": port_min,
        "port_max": port_max,
        "cidr": "" if remote else cidr,
        "remote_group": remote,
        "description": description,
    }


def _add_rules(group: SecurityGroup, rules: list[dict]) -> list[SecurityGroupRule]:
    existing = list(group.rules.all())
    if len(existing) + len(rules) > settings.SECURITY_GROUP_MAX_RULES:
        most = settings.SECURITY_GROUP_MAX_RULES
        raise Invalid("rules", _("A security group holds at most %(most)d rules.") % {"most": most})
    seen = {_identity(r.direction, r.protocol, r.port_min, r.port_max, r.cidr, r.remote_group_id) for r in existing}
    made = []
    for fields in rules:
        remote_id = fields["remote_group"].pk if fields["remote_group"] else None
        key = _identity(
            fields["direction"], fields["protocol"], fields["port_min"], fields["port_max"], fields["cidr"], remote_id
        )
        if key in seen:
            raise Conflict(_("This group has this rule already."))
        seen.add(key)
        made.append(R.objects.create(group=group, **fields))
    return made


def _identity(direction, protocol, port_min, port_max, cidr, remote_id) -> tuple:
    return (direction, protocol, port_min, port_max, cidr, str(remote_id or ""))


def group_create(*, actor: Actor, name: str, description: str = "", rules: list[RuleRequest] = ()) -> SecurityGroup:
    """A new group, with its rules, all or nothing."""
    cleaned = [clean_rule(actor.tenant, rule) for rule in rules]
    description = _check_description(description)
    try:
        with transaction.atomic():
            group = SecurityGroup.objects.create(
                tenant=actor.tenant, name=_check_name(actor.tenant, name), description=description
            )
            _add_rules(group, cleaned)
            audit(actor, "security_group.create", target=str(group.pk), name=group.name)
    except IntegrityError:
        raise Invalid("name", _("A security group with this name already exists in this tenant.")) from None
    return group


def _lock_group(group: SecurityGroup) -> SecurityGroup:
    return SecurityGroup.objects.select_for_update().get(pk=group.pk)


def group_update(*, actor: Actor, group: SecurityGroup, name: str | None = None, description: str | None = None):
    try:
        with transaction.atomic():
            locked = _lock_group(group)
            if name is not None:
                if locked.is_default and name.strip() != locked.name:
                    raise Conflict(_("The default group keeps its name."))
                locked.name = _check_name(actor.tenant, name, other_than=locked)
            if description is not None:
                locked.description = _check_description(description)
            locked.save(update_fields=["name", "description"])
            audit(actor, "security_group.update", target=str(locked.pk), name=locked.name)
    except IntegrityError:
        raise Invalid("name", _("A security group with this name already exists in this tenant.")) from None
    return locked


def group_delete(*, actor: Actor, group: SecurityGroup) -> None:
    with transaction.atomic():
        locked = _lock_group(group)
        if locked.is_default:
            raise Conflict(_("The default group cannot be deleted."))
        members = locked.instances.exclude(state=InstanceState.DELETED).count()
        if members:
            raise Conflict(_("This group still has %(count)d instance(s); detach them first.") % {"count": members})
        users = R.objects.filter(remote_group=locked).exclude(group=locked).select_related("group").first()
        if users is not None:
            raise Conflict(
                _('Rules of the group "%(name)s" name this group as their source; remove them first.')
                % {"name": users.group.name}
            )
        # Deleted instances keep no membership, so the filter of no guest changes.
        locked.instances.clear()
        locked.rules.all().delete()
        audit(actor, "security_group.delete", target=str(locked.pk), name=locked.name)
        locked.delete()


def rule_add(*, actor: Actor, group: SecurityGroup, request: RuleRequest) -> SecurityGroupRule:
    fields = clean_rule(actor.tenant, request)
    with transaction.atomic():
        locked = _lock_group(group)
        (rule,) = _add_rules(locked, [fields])
        audit(actor, "security_group.rule_add", target=str(locked.pk), rule=str(rule))
        firewall.queue_sync(actor.tenant.pk)
    return rule


def rule_delete(*, actor: Actor, rule: SecurityGroupRule) -> None:
    with transaction.atomic():
        locked = _lock_group(rule.group)
        deleted, _ = R.objects.filter(pk=rule.pk, group=locked).delete()
        if deleted:
            audit(actor, "security_group.rule_delete", target=str(locked.pk), rule=str(rule))
            firewall.queue_sync(actor.tenant.pk)


def _live(instance: Instance) -> Instance:
    locked = lock_instance(instance.pk)
    if locked.state in (InstanceState.DELETED, InstanceState.DELETING):
        raise Conflict(_("The instance is being deleted; its firewall can no longer change."))
    return locked


def instance_attach(*, actor: Actor, instance: Instance, group_id) -> SecurityGroup:
    group = resolve_group(actor.tenant, group_id)
    with transaction.atomic():
        locked = _live(instance)
        locked.security_groups.add(group)
        audit(actor, "instance.attach_security_group", target=str(locked.pk), group=str(group.pk))
        firewall.queue_sync(actor.tenant.pk)
    return group


def instance_set_groups(*, actor: Actor, instance: Instance, group_ids: list[str]) -> list[SecurityGroup]:
    """The instance's groups become exactly these (of its tenant); all or nothing."""
    groups = [resolve_group(actor.tenant, g, "security_group_ids") for g in sorted(set(group_ids))]
    with transaction.atomic():
        locked = _live(instance)
        before = {str(g) for g in locked.security_groups.values_list("pk", flat=True)}
        locked.security_groups.set(groups)
        after = {str(g.pk) for g in groups}
        if before != after:
            audit(
                actor,
                "instance.set_security_groups",
                target=str(locked.pk),
                added=sorted(after - before),
                removed=sorted(before - after),
            )
            firewall.queue_sync(actor.tenant.pk)
    return groups


def instance_detach(*, actor: Actor, instance: Instance, group_id) -> None:
    group = resolve_group(actor.tenant, group_id)
    with transaction.atomic():
        locked = _live(instance)
        if not locked.security_groups.filter(pk=group.pk).exists():
            raise Invalid("security_group_id", _("The instance is not a member of this group."))
        locked.security_groups.remove(group)
        audit(actor, "instance.detach_security_group", target=str(locked.pk), group=str(group.pk))
        firewall.queue_sync(actor.tenant.pk)
