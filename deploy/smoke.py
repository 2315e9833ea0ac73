"""The whole stack started the production way on this machine, smoke-tested, and removed again.

    .venv/bin/python deploy/smoke.py          (or `make prod-smoke`)

What starts, each as production runs it (docs/deploy.md): gunicorn with deploy/gunicorn.conf.py,
a Celery worker for the control queue and one host's queue, beat, the console proxy, and nginx
with deploy/nginx/cloud-portal.conf (rendered for loopback ports and a throwaway self-signed
certificate) in front of the web and the console's websocket; JSON logs and Prometheus'
multiprocess directory as in the systemd units. Everything lives in a fresh database, a Redis
prefix and a temporary directory of its own, and is gone afterwards, whatever happened.

Checks: TLS, the redirect from http, a page, the security headers and the request id through
nginx; /metrics and /healthz/ready closed at the proxy; readiness (database, Redis, broker,
beat's tick, the host's hypervisor) straight at gunicorn; /metrics holding what the worker,
beat and web each counted; the console's websocket upgraded through nginx; JSON log lines.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NGINX_CONF = ROOT / "deploy" / "nginx" / "cloud-portal.conf"
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"
READY_WITHIN = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def render_nginx(*, web: int, console: int, http: int, https: int, cert: Path, key: Path, workdir: Path) -> str:
    """deploy/nginx/cloud-portal.conf for this machine's loopback ports and certificate, inside
    the few lines a whole nginx.conf needs to run unprivileged from `workdir`."""
    site = NGINX_CONF.read_text()
    site = site.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{web};")
    site = site.replace("server 127.0.0.1:6080;", f"server 127.0.0.1:{console};")
    site = re.sub(r"^\s*listen \[::\]:.*\n", "", site, flags=re.M)
    site = site.replace("listen 80;", f"listen 127.0.0.1:{http};")
    site = site.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{https} ssl http2;")
    site = site.replace("server_name portal.example.com;", "server_name 127.0.0.1 localhost;")
    site = site.replace("/etc/letsencrypt/live/portal.example.com/fullchain.pem", str(cert))
    site = site.replace("/etc/letsencrypt/live/portal.example.com/privkey.pem", str(key))
    site = site.replace("/var/www/letsencrypt", str(workdir / "acme"))
    site = site.replace("https://$host$request_uri", f"https://$host:{https}$request_uri")
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
    temp = "".join(
        f"    {kind}_temp_path {workdir / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}worker_processes 1;\npid {workdir / 'nginx.pid'};\nerror_log {workdir / 'nginx-error.log'};\n"
        "events { worker_connections 256; }\n"
        f"http {{\n    access_log {workdir / 'nginx-access.log'};\n{temp}{site}\n}}\n"
    )


def self_signed(workdir: Path) -> tuple[Path, Path]:
    cert, key = workdir / "tls.crt", workdir / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


class Stack:
    def __init__(self, workdir: Path, database_server: str, redis_url: str):
        self.id = uuid.uuid4().hex[:8]
        self.workdir = workdir
        self.server = database_server.rstrip("/")
        self.db_name = f"cp_smoke_{self.id}"
        self.database_url = f"{self.server}/{self.db_name}"
        self.redis_url = redis_url
        self.prefix = f"smoke-{self.id}"
        self.ports = {name: free_port() for name in ("web", "console", "http", "https")}
        self.host_queue = f"host.smoke-{self.id}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.metrics_dir = workdir / "metrics"
        https = f"https://127.0.0.1:{self.ports['https']}"
        self.origin = https
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": self.prefix,
            "VAR_DIR": str(workdir / "var"),
            "SECRET_KEY": uuid.uuid4().hex * 2,
            "DEBUG": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PORTAL_BASE_URL": https,
            "CSRF_TRUSTED_ORIGINS": https,
            "CONSOLE_PROXY_URL": f"wss://127.0.0.1:{self.ports['https']}/console",
            "CONSOLE_ALLOWED_ORIGINS": https,
            "CONSOLE_PROXY_BIND": f"127.0.0.1:{self.ports['console']}",
            "PORTAL_BIND": f"127.0.0.1:{self.ports['web']}",
            "GUNICORN_WORKERS": "2",
            "LOG_FORMAT": "json",
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            "BEAT_TICK_SECONDS": "2",
            "PYTHONUNBUFFERED": "1",
        }

    # -- life cycle ---------------------------------------------------------------------------

    def manage(self, *argv: str) -> str:
        done = subprocess.run(
            [str(BIN / "python"), "manage.py", *argv], cwd=ROOT, env=self.env, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def prepare(self) -> None:
        self.metrics_dir.mkdir()
        with psycopg.connect(f"{self.server}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self.manage("migrate", "-v0")
        self.manage("collectstatic", "--no-input", "-v0")
        # libvirt's test driver as the one host: its hypervisor is in every worker's memory.
        self.manage(
            "shell",
            "-c",
            "from compute.hosts import host_register; "
            f"host_register(name='smoke-{self.id}', uri='test:///default', queue='{self.host_queue}', "
            "storage_pool='default-pool', network='default')",
        )
        (self.workdir / "acme").mkdir()
        cert, key = self_signed(self.workdir)
        self.cert = cert
        (self.workdir / "nginx.conf").write_text(
            render_nginx(
                web=self.ports["web"], console=self.ports["console"], http=self.ports["http"],
                https=self.ports["https"], cert=cert, key=key, workdir=self.workdir,
            )
        )  # fmt: skip

    def start(self) -> None:
        control = f"{self.prefix}.control"
        commands = {
            "web": [str(BIN / "gunicorn"), "--config", str(GUNICORN_CONF), "portal.wsgi"],
            "worker": [str(BIN / "celery"), "-A", "portal", "worker", "-Q", f"{control},{self.host_queue}",
                       "-n", f"smoke-{self.id}@localhost", "-P", "threads", "-c", "2", "-l", "info"],
            "beat": [str(BIN / "celery"), "-A", "portal", "beat", "-l", "info",
                     "-s", str(self.workdir / "celerybeat-schedule")],
            "console": [str(BIN / "python"), "manage.py", "consoleproxy"],
            "nginx": [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(self.workdir / "nginx.conf"),
                      "-p", str(self.workdir), "-g", "daemon off;"],
        }  # fmt: skip
        for name, argv in commands.items():
            log = (self.workdir / f"{name}.log").open("wb")
            self.procs[name] = subprocess.Popen(
                argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs.values():
            try:  # what is left of each group: websockify's children, gunicorn's workers
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def remove(self) -> None:
        try:
            with psycopg.connect(f"{self.server}/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        except psycopg.Error as exc:
            print(f"  could not drop {self.db_name}: {exc}", file=sys.stderr)
        client = redis.Redis.from_url(self.redis_url)
        keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()

    # -- HTTP ---------------------------------------------------------------------------------

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    def get(self, url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
        request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (our own http(s) URLs)
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=self.tls()), NoRedirect())
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def wait_until(self, what: str, check, within: float = READY_WITHIN):
        deadline = time.monotonic() + within
        last = None
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)[-3000:]}")
            try:
                result = check()
                if result:
                    return result
            except OSError as exc:
                last = exc
            time.sleep(0.3)
        raise RuntimeError(f"{what}: not within {within:.0f} s ({last})")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def websocket_upgrade(stack: Stack) -> str:
    """The status line nginx answers a console websocket handshake with (websockify behind it)."""
    port = stack.ports["https"]
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with stack.tls().wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(
            (
                "GET /console/?token=not-a-token HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: binary\r\nOrigin: {stack.origin}\r\n\r\n"
            ).encode()
        )
        return sock.recv(4096).decode(errors="replace").split("\r\n", 1)[0]


def checks(stack: Stack) -> list[str]:
    """Each check raises with what it saw; returns what passed, one line each."""
    passed = []
    https = f"https://127.0.0.1:{stack.ports['https']}"
    direct = f"http://127.0.0.1:{stack.ports['web']}"

    def ok(line: str) -> None:
        passed.append(line)
        print(f"  ok  {line}", flush=True)

    stack.wait_until("nginx and gunicorn answer", lambda: stack.get(f"{https}/healthz/live")[0] == 200)
    status, headers, _ = stack.get(f"{https}/healthz/live", {"X-Request-ID": f"smoke-{stack.id}"})
    assert headers.get("X-Request-ID") == f"smoke-{stack.id}", headers
    ok("TLS through nginx: /healthz/live 200, the caller's X-Request-ID echoed")
    status, headers, _ = stack.get(f"http://127.0.0.1:{stack.ports['http']}/accounts/login/")
    assert status == 301 and headers["Location"].startswith("https://"), (status, headers)
    ok("plain http redirected to https")
    status, headers, body = stack.get(f"{https}/accounts/login/")
    assert status == 200 and b"csrfmiddlewaretoken" in body, status
    assert "max-age" in headers.get("Strict-Transport-Security", ""), headers
    assert "Secure" in headers.get("Set-Cookie", ""), headers
    assert "Content-Security-Policy" in headers, headers
    ok("login page over TLS with HSTS, CSP and Secure cookies")
    status, headers, _ = stack.get(f"{https}/static/portal/portal.js")
    assert status == 200 and "javascript" in headers.get("Content-Type", ""), (status, headers)
    ok("static files through nginx (whitenoise)")
    for path in ("/metrics", "/healthz/ready"):
        assert stack.get(f"{https}{path}")[0] == 404, path
    ok("/metrics and /healthz/ready closed at the proxy")

    def ready():
        status, _, body = stack.get(f"{direct}/healthz/ready")
        return json.loads(body) if status == 200 else None

    body = stack.wait_until("/healthz/ready answers 200", ready)
    assert f"hypervisor:smoke-{stack.id}" in body["checks"], body
    ok(f"readiness 200 at gunicorn: {', '.join(sorted(body['checks']))}")

    def counted():
        status, _, text = stack.get(f"{direct}/metrics")
        text = text.decode()
        wanted = [
            'portal_celery_tasks_total{outcome="success",task="portal.tasks.beat_tick"}',  # the worker
            'portal_celery_tasks_published_total{task="portal.tasks.beat_tick"}',  # beat
            'portal_http_requests_total{method="GET",route="healthz/live",status="200"}',  # gunicorn
            "portal_console_sessions",
        ]
        return status == 200 and all(w in text for w in wanted)

    stack.wait_until("/metrics holds the worker's, beat's and web's samples", counted, within=20)
    ok("/metrics adds up web, worker and beat (multiprocess directory)")
    # An unknown token: websockify refuses it during the handshake (a valid one needs a running
    # guest's VNC display), so nginx answers 502, and the proxy's log shows the handshake came.
    line = websocket_upgrade(stack)
    stack.wait_until("the console proxy saw the handshake", lambda: "Invalid, used or expired" in stack.log("console"))
    assert " 502 " in line, line
    ok("console websocket handshake through nginx reached websockify (token refused there, as it must)")
    worker_lines = [json.loads(x) for x in stack.log("worker").splitlines() if x.startswith("{")]
    ticks = [x for x in worker_lines if x.get("task_name") == "portal.tasks.beat_tick" and x.get("request_id")]
    assert ticks, stack.log("worker")[-2000:]
    ok(f"worker logs JSON lines ({len(worker_lines)}), its tasks' lines with a request id")
    access = [json.loads(x) for x in stack.log("web").splitlines() if x.startswith("{")]
    assert any(f"rid=smoke-{stack.id}" in x["message"] for x in access if x["logger"] == "gunicorn.access"), access[-5:]
    ok("gunicorn logs JSON lines, its access lines with the request id")
    return passed


def main() -> int:
    database_server = os.environ.get("SMOKE_DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    workdir = Path(tempfile.mkdtemp(prefix="portal-smoke-"))
    stack = Stack(workdir, database_server, redis_url)
    print(f"Production smoke test {stack.id}: database {stack.db_name}, Redis prefix {stack.prefix}, {workdir}")
    failed = None
    try:
        stack.prepare()
        stack.start()
        checks(stack)
    except (AssertionError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        failed = exc
        for name in stack.procs:
            print(f"--- {name} (last lines) ---\n{stack.log(name)[-1500:]}", file=sys.stderr)
    finally:
        stack.stop()
        stack.remove()
        shutil.rmtree(workdir, ignore_errors=True)
    if failed is not None:
        print(f"FAILED: {type(failed).__name__}: {failed}", file=sys.stderr)
        return 1
    print("Production smoke test passed; everything it started is stopped and removed.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
