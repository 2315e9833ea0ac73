"""How far an instance's latest action has got: one presenter for the API and the pages.

A build counts its finished PROVISION_STEPS from the action log; the API shows that as a
percentage that reaches 100 only once the instance is running, the instance page as
"step N of M" with each step's row.
"""

from __future__ import annotations

from django.db.models import Count

from compute.models import InstanceAction, InstanceState
from compute.transitions import PROVISION_STEPS

BUILD_ACTIONS = ("create", "retry")


def percent(state: str, launched_at, steps_done: int) -> int:
    """The API's `progress`: a build's finished steps out of its steps plus running; 100 for
    anything settled, 0 for a build that failed before the guest ever ran."""
    if state != InstanceState.BUILDING:
        return 0 if state == InstanceState.ERROR and not launched_at else 100
    return int(100 * steps_done / (len(PROVISION_STEPS) + 1))


def steps_done(building_ids) -> dict:
    """Finished provisioning steps per building instance, in one query for a whole page."""
    if not building_ids:
        return {}
    return dict(
        InstanceAction.objects.filter(
            instance_id__in=building_ids,
            action__in=BUILD_ACTIONS,
            status=InstanceAction.Status.DONE,
            step__in=PROVISION_STEPS,
        )
        .values("instance_id")
        .annotate(n=Count("step", distinct=True))
        .values_list("instance_id", "n")
    )


def action_steps(actions: list[InstanceAction]) -> dict | None:
    """The latest action's steps, as its log (oldest first) records them; for a build, the
    steps still to come too. None when the log holds no action."""
    requests = [a for a in actions if not a.step]
    if not requests:
        return None
    latest = requests[-1]
    ran = {}
    for row in actions:
        if row.step and row.id > latest.id:
            ran[row.step] = row  # a step run twice (a redelivered task) shows its last run
    expected = list(PROVISION_STEPS) if latest.action in BUILD_ACTIONS else []
    names = expected + [name for name in ran if name not in expected]
    steps = [{"name": name, "row": ran.get(name)} for name in names]
    done = sum(1 for s in steps if s["row"] and s["row"].status == InstanceAction.Status.DONE)
    return {"action": latest, "steps": steps, "done": done, "total": len(steps) or 1}
