"""Rows written and read by hand-made statements (base.rows) are the rows the ORM writes and reads."""

import pytest
from django.db import IntegrityError, transaction
from django.db.models.signals import post_save, pre_save

from base import rows
from compute import operations
from compute.models import Host, Image, Instance, InstanceAction
from tenants.models import AuditEvent, Tenant


def field_values(obj) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}


def test_a_task_loads_the_instance_and_its_relations_as_the_orm_does(building):
    # given: fields of every kind set (JSON, a decimal, timestamps, an address, a list)
    Instance.objects.filter(pk=building.pk).update(pending={"size": {"vcpus": 2}}, ssh_keys=["ssh-ed25519 AAAA x"])
    # when
    loaded = operations._instance_with_relations(building.pk)
    # then
    orm = Instance.objects.select_related("host", "image", "tenant").get(pk=building.pk)
    assert field_values(loaded) == field_values(orm)
    for relation, model in (("host", Host), ("image", Image), ("tenant", Tenant)):
        assert type(getattr(loaded, relation)) is model
        assert field_values(getattr(loaded, relation)) == field_values(getattr(orm, relation))
    assert not loaded._state.adding
    assert operations._instance_with_relations("00000000-0000-0000-0000-000000000000") is None


def test_rows_inserted_together_are_saved_rows_with_their_signals(building):
    seen = []

    def note(sender, instance, **kwargs):
        seen.append((sender.__name__, "created" if kwargs.get("created") else "before"))

    for signal in (pre_save, post_save):
        signal.connect(note, sender=InstanceAction, dispatch_uid=f"rows-{signal}")
    try:
        action = InstanceAction(instance=building, action="probe", status=InstanceAction.Status.REQUESTED)
        event = AuditEvent(tenant=building.tenant, action="instance.probe", target=str(building.pk))
        # when
        rows.insert_together([action, event])
    finally:
        for signal in (pre_save, post_save):
            signal.disconnect(sender=InstanceAction, dispatch_uid=f"rows-{signal}")
    # then: both written, with their keys, and the action's signals sent as save() sends them
    assert InstanceAction.objects.get(pk=action.pk).action == "probe"
    assert AuditEvent.objects.get(pk=event.pk).target == str(building.pk)
    assert not action._state.adding
    assert seen == [("InstanceAction", "before"), ("InstanceAction", "created")]


@pytest.mark.django_db(transaction=True)
def test_rows_inserted_together_are_all_written_or_none(building):
    # given: the second row breaks a constraint (no such instance)
    good = AuditEvent(tenant=building.tenant, action="instance.probe", target="good")
    bad = InstanceAction(instance_id="00000000-0000-0000-0000-000000000000", action="probe", status="requested")
    # when / then: the statement fails at commit (foreign keys are checked then), and neither is kept
    with pytest.raises(IntegrityError), transaction.atomic():
        rows.insert_together([good, bad])
    assert not AuditEvent.objects.filter(target="good").exists()
    assert not InstanceAction.objects.filter(action="probe").exists()
