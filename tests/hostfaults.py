"""Host faults for the fast suite: a hypervisor that stops answering, a worker gone silent.

Nothing is imitated: an unreachable hypervisor is the host's URI pointed at a host file that
does not exist, which libvirt's test driver refuses to open, as a real daemon that is gone
refuses connections.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from datetime import datetime

from compute.models import Host


@contextmanager
def hypervisor_unreachable(host: Host):
    real = Host.objects.values_list("uri", flat=True).get(pk=host.pk)
    Host.objects.filter(pk=host.pk).update(uri=f"test:///nonexistent-{uuid.uuid4().hex}/host.xml")
    try:
        yield
    finally:
        Host.objects.filter(pk=host.pk).update(uri=real)


def worker_silent_since(host: Host, moment: datetime) -> None:
    """The host's worker answered its last heartbeat at `moment` and none asked since."""
    Host.objects.filter(pk=host.pk).update(last_heartbeat=moment, heartbeat_asked_at=moment)
