"""`make run`'s command really starts web, worker, beat and console proxy, serves logins over plain
http, and signals to its process group stop them all."""

import http.cookiejar
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import dj_database_url
import psycopg
import pytest
from psycopg import sql

from tests.portal import proctree
from tests.processes import free_port, redis_client

ROOT = Path(__file__).resolve().parents[2]


def login_over_http(base: str, email: str, password: str):
    """Log in as a browser would over plain http: a cookie marked Secure is never sent back.
    Returns the cookies, the tenant's JSON, and the logged-in opener."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{base}/accounts/login/", timeout=10).read()
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    form = urllib.parse.urlencode({"login": email, "password": password, "csrfmiddlewaretoken": csrf})
    opener.open(f"{base}/accounts/login/", data=form.encode(), timeout=10).read()
    with opener.open(f"{base}/api/v1/tenant", timeout=10) as response:
        return jar, response.read().decode(), opener


def api_json(opener, jar, url: str, body: dict | None = None) -> dict:
    """GET, or POST `body`, with the session and its CSRF token, as the portal's pages do."""
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "X-CSRFToken": csrf}
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 (http://127.0.0.1 only)
    with opener.open(request, timeout=10) as response:
        return json.loads(response.read())


def first_result(opener, jar, url: str) -> dict:
    answer = api_json(opener, jar, url)
    return (answer["results"] if isinstance(answer, dict) else answer)[0]  # paged or not


@pytest.fixture
def run_database():
    """A database name on the suite's server that no one has made yet; dropped after the test."""
    server = dj_database_url.parse(os.environ["DATABASE_URL"])
    name = f"cp_runtest_{uuid.uuid4().hex[:8]}"
    yield f"postgres://{server['USER']}@{server['HOST']}:{server['PORT']}/{name}", name
    with psycopg.connect(
        host=server["HOST"], port=server["PORT"], user=server["USER"], dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def redis_prefix():
    """The run's Redis prefix; its keys (queues, Celery's bindings) go with the test."""
    prefix = f"runtest-{uuid.uuid4().hex[:8]}"
    yield prefix
    client = redis_client()
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)


@pytest.mark.worker
@pytest.mark.parametrize(
    "how, signals",
    [("ctrl-c", [signal.SIGINT]), ("sigterm-3x", [signal.SIGTERM, signal.SIGTERM, signal.SIGTERM])],
)
def test_it_serves_the_portal_and_stops_everything_on_a_signal_to_its_group(
    tmp_path, run_database, redis_prefix, how, signals
):
    port = free_port()
    env = {
        **os.environ,
        "VAR_DIR": str(tmp_path),
        "LIBVIRT_DEFAULT_URI": "",  # force the test-driver fallback, whatever runs on this machine
        "REDIS_PREFIX": redis_prefix,
        "CELERY_DEFAULT_QUEUE": f"runtest-{uuid.uuid4().hex[:8]}.control",
        "CONSOLE_PROXY_BIND": f"127.0.0.1:{free_port()}",
    }
    # A database of its own on the suite's server, which runportal makes (as on a fresh machine)
    env["DATABASE_URL"], database = run_database
    for name in ("SECURE_COOKIES", "PORTAL_BASE_URL", "DEBUG"):
        env.pop(name, None)  # production-like settings
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runportal", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    tree: set[proctree.Process] = set()
    try:
        body = None
        for _ in range(120):  # up to 60 s
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:  # noqa: S310
                    body = response.read()
                    break
            except OSError:
                time.sleep(0.5)
        assert body == b'{"status": "ok"}'
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/flavors", timeout=5) as response:  # noqa: S310
            assert b"s1.small" in response.read()

        # the operator logs in over plain http: the session cookie is not Secure, so it comes back
        password = (tmp_path / "operator-password").read_text().strip()
        base = f"http://127.0.0.1:{port}"
        jar, tenant, opener = login_over_http(base, "operator@localhost", password)
        assert {c.name: c.secure for c in jar}["sessionid"] is False
        assert '"name"' in tenant

        # and creates an instance from the demo catalogue: it runs, with its address
        image = first_result(opener, jar, f"{base}/api/v1/images")
        flavor = first_result(opener, jar, f"{base}/api/v1/flavors")
        created = api_json(
            opener, jar, f"{base}/api/v1/instances", {"name": "first", "image": image["id"], "flavor": flavor["id"]}
        )
        shown = created
        for _ in range(120):  # up to 60 s
            shown = api_json(opener, jar, f"{base}/api/v1/instances/{created['id']}")
            if shown["state"] in ("running", "error"):
                break
            time.sleep(0.5)
        assert shown["state"] == "running", shown
        assert shown["ip_address"] == created["ip_address"]

        tree = proctree.descendants(proc.pid)
        names = " ".join(p.name for p in tree)
        assert "gunicorn" in names and "celery" in names, names
    finally:
        sessions = {p.pid for p in tree if p.ppid == proc.pid}
        for signum in signals:  # the whole group, as a terminal or `kill -TERM -<pgid>` does
            os.killpg(proc.pid, signum)
            time.sleep(0.3)
        try:
            output, _ = proc.communicate(timeout=40)
        finally:
            proctree.kill(tree | {p for p in proctree.processes() if p.pid == proc.pid})
    assert "NO LIBVIRTD" in output
    assert "operator@localhost  password: " in output
    assert "All portal processes stopped." in output
    assert proctree.alive(tree, sessions) == set(), output[-3000:]
    assert f"Created the database {database}" in output
