"""`make bench`'s live-migration area still runs (`--quick`: one move each way): two namespaced
libvirtds of its own, a worker each, a guest moved by the portal and one by virsh."""

from __future__ import annotations

import pytest

from tests.test_bench import run_bench

pytestmark = [pytest.mark.e2e]


def test_the_live_migration_benchmark_runs(tmp_path, tiny_image_file):
    figures = run_bench(tmp_path, "live-migration")

    assert [figure["area"] for figure in figures] == ["live-migration"]
    if figures[0]["status"] == "skipped":
        pytest.skip(f"LIVE-MIGRATION BENCH SKIPPED: {figures[0]['note']}")
    assert figures[0]["value"] > 0 and figures[0]["baseline"] > 0
