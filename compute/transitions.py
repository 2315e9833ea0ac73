"""Which action may start from which state, and the state it moves the instance into."""

from __future__ import annotations

import functools

from django.utils.translation import gettext as _
from django.utils.translation import pgettext_lazy

from compute.models import InstanceState as S

# The steps of a build (the "create" and "retry" actions), in order; each is one action-log row.
PROVISION_STEPS = ("image", "disk", "seed", "dhcp", "firewall", "define", "start")

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
    # An operator moves an instance to another host (compute.migration): a stopped one cold,
    # a running one live.
    "migrate": (frozenset({S.STOPPED, S.RUNNING}), S.MIGRATING),
    # The system starts an HA instance of a dead host on another host (compute.evacuation).
    "evacuate": (frozenset({S.HOST_DOWN}), S.EVACUATING),
}
# Actions only operators (or the system) may start: never offered to the instance's tenant.
OPERATOR_ACTIONS = frozenset({"migrate", "evacuate"})

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
# (billing, SLA) records only these; in-flight states keep whatever the last one was. An
# instance rests in host_down until its host returns or it is started elsewhere.
SETTLED_STATES = STABLE_STATES | {S.ERROR, S.DELETED, S.HOST_DOWN}


def allowed_actions(state: str, *, has_iso: bool = False) -> list[str]:
    """What may start from `state`; detaching the install ISO only while one is attached."""
    return list(_allowed(state, has_iso))


@functools.cache  # a few dozen (state, has_iso) pairs, asked once per row of every list page
def _allowed(state: str, has_iso: bool) -> tuple[str, ...]:
    return tuple(
        action
        for action, (sources, _target) in TRANSITIONS.items()
        if state in sources and (has_iso or action != "detach_iso") and action not in OPERATOR_ACTIONS
    )


# States and actions as words in a refusal's sentence. In English the word is the code itself
# (what the API's `state` says); other languages have words of their own.
STATE_WORDS = {
    S.BUILDING: pgettext_lazy("instance state", "building"),
    S.RUNNING: pgettext_lazy("instance state", "running"),
    S.STOPPING: pgettext_lazy("instance state", "stopping"),
    S.STOPPED: pgettext_lazy("instance state", "stopped"),
    S.STARTING: pgettext_lazy("instance state", "starting"),
    S.REBOOTING: pgettext_lazy("instance state", "rebooting"),
    S.RESIZING: pgettext_lazy("instance state", "resizing"),
    S.REBUILDING: pgettext_lazy("instance state", "rebuilding"),
    S.SNAPSHOTTING: pgettext_lazy("instance state", "snapshotting"),
    S.DELETING: pgettext_lazy("instance state", "deleting"),
    S.DELETED: pgettext_lazy("instance state", "deleted"),
    S.ERROR: pgettext_lazy("instance state", "error"),
    S.DETACHING_ISO: pgettext_lazy("instance state", "detaching_iso"),
    S.RESCUING: pgettext_lazy("instance state", "rescuing"),
    S.RESCUE: pgettext_lazy("instance state", "rescue"),
    S.UNRESCUING: pgettext_lazy("instance state", "unrescuing"),
    S.MIGRATING: pgettext_lazy("instance state", "migrating"),
    S.HOST_DOWN: pgettext_lazy("instance state", "host_down"),
    S.EVACUATING: pgettext_lazy("instance state", "evacuating"),
}
ACTION_WORDS = {
    "start": pgettext_lazy("instance action", "start"),
    "stop": pgettext_lazy("instance action", "stop"),
    "reboot": pgettext_lazy("instance action", "reboot"),
    "resize": pgettext_lazy("instance action", "resize"),
    "rebuild": pgettext_lazy("instance action", "rebuild"),
    "snapshot": pgettext_lazy("instance action", "snapshot"),
    "delete": pgettext_lazy("instance action", "delete"),
    "detach_iso": pgettext_lazy("instance action", "detach_iso"),
    "rescue": pgettext_lazy("instance action", "rescue"),
    "unrescue": pgettext_lazy("instance action", "unrescue"),
    "migrate": pgettext_lazy("instance action", "migrate"),
    "evacuate": pgettext_lazy("instance action", "evacuate"),
}


def state_word(state: str) -> str:
    return str(STATE_WORDS.get(state, state))


def action_word(action: str) -> str:
    return str(ACTION_WORDS.get(action, action))


def refusal(action: str, state: str) -> str | None:
    """Why `action` cannot start from `state`, or None when it can."""
    sources, _target = TRANSITIONS[action]
    if state in sources:
        return None
    allowed = ", ".join(state_word(source) for source in sorted(sources)) or _("no state")
    return _("Cannot %(action)s an instance that is %(state)s; %(action)s needs it to be %(allowed)s.") % {
        "action": action_word(action),
        "state": state_word(state),
        "allowed": allowed,
    }
