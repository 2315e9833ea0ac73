"""`make run` empties the multiprocess directory at each start (portal.runner.fresh_metrics_dir)."""

from __future__ import annotations

from portal.runner import fresh_metrics_dir


def test_it_starts_each_run_with_an_empty_metrics_directory(tmp_path):
    # given: what the processes of an earlier run left
    path = tmp_path / "metrics"
    path.mkdir()
    (path / "counter_4242.db").write_bytes(b"\0" * 64)
    # when
    made = fresh_metrics_dir(str(path))
    # then
    assert made == str(path)
    assert list(path.iterdir()) == []
    assert path.stat().st_mode & 0o777 == 0o700


def test_it_makes_a_missing_metrics_directory(tmp_path):
    path = tmp_path / "var" / "metrics"
    fresh_metrics_dir(str(path))
    assert path.is_dir()
