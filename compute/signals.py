"""What compute tells the layers above it, which it may not import (billing, the web)."""

from __future__ import annotations

from django.dispatch import Signal

# A running instance is about to leave its host by live migration: `host` (the source, where
# it still is), `stats` (its DomainStats read there just now). The new QEMU on the target starts
# its counters at zero, so billing stores this last reading of the old ones (billing.apps).
leaving_host = Signal()
