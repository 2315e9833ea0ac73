"""deploy/: the nginx config and the systemd units are valid as shipped, and the whole stack,
started the production way by deploy/smoke.py, passes its smoke checks and leaves nothing."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

from tests.processes import database_url, free_port, redis_client

DEPLOY = Path(settings.BASE_DIR) / "deploy"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (portal/scripts/system-deps.sh)")


def smoke_module():
    spec = importlib.util.spec_from_file_location("deploy_smoke", DEPLOY / "smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_nginx
def test_it_ships_an_nginx_config_that_nginx_accepts(tmp_path):
    # given: the shipped site, for loopback ports and a throwaway certificate
    smoke = smoke_module()
    (tmp_path / "acme").mkdir()
    cert, key = smoke.self_signed(tmp_path)
    ports = {name: free_port() for name in ("web", "console", "http", "https")}
    conf = tmp_path / "nginx.conf"
    conf.write_text(smoke.render_nginx(**ports, cert=cert, key=key, workdir=tmp_path))
    # when
    done = subprocess.run([NGINX, "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True)
    # then
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr
    # the console's websocket is proxied with the upgrade headers, the operators' endpoints closed
    site = (DEPLOY / "nginx" / "cloud-portal.conf").read_text()
    assert "proxy_set_header Upgrade $http_upgrade;" in site
    assert "location = /metrics" in site and "location = /healthz/ready" in site


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_it_ships_systemd_units_that_systemd_accepts(tmp_path):
    # given: the units, pointed at this checkout instead of /opt/cloud-portal
    units = []
    for unit in (DEPLOY / "systemd").iterdir():
        if unit.suffix not in (".service", ".target"):
            continue
        text = unit.read_text().replace("/opt/cloud-portal", str(settings.BASE_DIR))
        text = text.replace("/etc/cloud-portal/portal.env", str(tmp_path / "portal.env"))
        (tmp_path / unit.name).write_text(text)
        units.append(unit.name)
    (tmp_path / "portal.env").write_text("REDIS_PREFIX=portal\n")
    (tmp_path / "cloud-portal-worker@portal.control.service").symlink_to(tmp_path / "cloud-portal-worker@.service")
    names = [u for u in units if "@" not in u] + ["cloud-portal-worker@portal.control.service"]
    # when
    done = subprocess.run(
        ["systemd-analyze", "verify", *[str(tmp_path / name) for name in names]],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # then: nothing to say but what a machine without the portal's user or services would
    complaints = [
        line
        for line in done.stderr.splitlines()
        if line.strip() and "Failed to resolve" not in line and "not found" not in line.lower()
    ]
    assert complaints == [], done.stderr
    assert {"cloud-portal-web.service", "cloud-portal-beat.service", "cloud-portal-console.service"} <= set(units)


@needs_nginx
@pytest.mark.worker
def test_it_passes_the_production_smoke_test_and_leaves_nothing_behind():
    # when
    db = settings.DATABASES["default"]
    server = database_url({**db, "NAME": ""}).rstrip("/")
    done = subprocess.run(
        [sys.executable, str(DEPLOY / "smoke.py")],
        cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=300,
        env={**os.environ, "SMOKE_DATABASE_SERVER": server},
    )  # fmt: skip
    # then
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Production smoke test passed" in done.stdout
    smoke_id = done.stdout.split("Production smoke test ", 1)[1].split(":", 1)[0]
    with psycopg.connect(f"{server}/postgres") as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [f"cp_smoke_{smoke_id}"])
        assert left.fetchone()[0] == 0
    assert not list(redis_client().scan_iter(match=f"smoke-{smoke_id}*"))
