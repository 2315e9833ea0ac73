"""Which action may start from which state, and the state it moves the instance into."""

from __future__ import annotations

from django.utils.translation import gettext as _

from compute.models import InstanceState as S

# The steps of a build (the "create" and "retry" actions), in order; each is one action-log row.
PROVISION_STEPS = ("image", "disk", "seed", "dhcp", "define", "start")

# action -> (states it may start from, the in-flight state it sets)
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "start": (frozenset({S.STOPPED}), S.STARTING),
    "stop": (frozenset({S.RUNNING}), S.STOPPING),
    "reboot": (frozenset({S.RUNNING}), S.REBOOTING),
    "resize": (frozenset({S.RUNNING, S.STOPPED}), S.RESIZING),
    "rebuild": (frozenset({S.RUNNING, S.STOPPED, S.ERROR}), S.REBUILDING),
    "snapshot": (frozenset({S.RUNNING, S.STOPPED}), S.SNAPSHOTTING),
    "delete": (frozenset(set(S.values) - {S.DELETING, S.DELETED}), S.DELETING),
    # The install ISO comes out (a running guest sees its CD-ROM ejected) and the disk boots.
    "detach_iso": (frozenset({S.RUNNING, S.STOPPED}), S.DETACHING_ISO),
    # The rescue system boots with the instance's own disk as its second disk, and back.
    "rescue": (frozenset({S.RUNNING, S.STOPPED}), S.RESCUING),
    "unrescue": (frozenset({S.RESCUE}), S.UNRESCUING),
}

# The action behind each in-flight state (a build is the "create" action), for the reaper
# that resumes the work of a dead worker.
ACTION_OF_IN_FLIGHT: dict[str, str] = {
    S.BUILDING: "create",
    **{in_flight: action for action, (_sources, in_flight) in TRANSITIONS.items()},
}
IN_FLIGHT = frozenset(ACTION_OF_IN_FLIGHT)

# States in which nothing happens by itself. A rescued guest runs (and bills) as running.
STABLE_STATES = frozenset({S.RUNNING, S.STOPPED, S.RESCUE})
# States an instance rests in until someone acts: pages stop polling it, and the state log
# (billing, SLA) records only these; in-flight states keep whatever the last one was.
SETTLED_STATES = STABLE_STATES | {S.ERROR, S.DELETED}


def allowed_actions(state: str, *, has_iso: bool = False) -> list[str]:
    """What may start from `state`; detaching the install ISO only while one is attached."""
    return [
        action
        for action, (sources, _target) in TRANSITIONS.items()
        if state in sources and (has_iso or action != "detach_iso")
    ]


def refusal(action: str, state: str) -> str | None:
    """Why `action` cannot start from `state`, or None when it can."""
    sources, _target = TRANSITIONS[action]
    if state in sources:
        return None
    allowed = ", ".join(sorted(sources)) or _("no state")
    return _("Cannot %(action)s an instance that is %(state)s; %(action)s needs it to be %(allowed)s.") % {
        "action": action,
        "state": state,
        "allowed": allowed,
    }
