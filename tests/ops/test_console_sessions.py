"""The console sessions gauge, counted by the real console proxy process (one child a session)."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.test import Client

from compute import console
from tests.conftest import actor
from tests.console.test_console_proxy import ORIGIN, open_console, running, vnc_peer  # noqa: F401 (fixtures)
from tests.ops.scrape import families, sample
from tests.processes import console_proxy

pytestmark = pytest.mark.worker


def sessions() -> float | None:
    return sample(families(Client()), "portal_console_sessions", "portal_console_sessions")


def wait_for_sessions(count: int, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while (seen := sessions() or 0) != count:
        assert time.monotonic() < deadline, f"{seen} console sessions, wanted {count}"
        time.sleep(0.1)


def test_it_counts_open_console_sessions(transactional_db, settings, running, alice, tenant_a, tmp_path, monkeypatch):  # noqa: F811
    # given: the proxy writing its metrics where this process's /metrics reads them
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with console_proxy(database=connection.settings_dict, redis_prefix=settings.REDIS_PREFIX, origin=ORIGIN) as (
        port,
        _output,
    ):
        assert not sessions()
        # when: a session opens
        ws = open_console(port, console.mint_token(actor=actor(alice, tenant_a), instance=running))
        assert ws.recvmsg() == b"RFB 003.008\n"
        # then
        wait_for_sessions(1)
        # when: it closes
        ws.close()
        # then
        wait_for_sessions(0)
