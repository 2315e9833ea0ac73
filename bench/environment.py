"""The run's own database, Redis prefix and scratch directory, all removed at the end.

Settings are read from the environment once, when Django is set up, so everything here is
decided before `django.setup()`: DATABASE_URL points at a fresh `cloudportal_bench_<id>` on
the server named by the caller's DATABASE_URL, and REDIS_PREFIX at `bench-<id>` (settings
derive the cache's and Celery's key prefixes from it). Child processes get the same values.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import dj_database_url
import psycopg
import redis
from psycopg import sql

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/cloudportal"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
BASE_DIR = Path(__file__).resolve().parent.parent
CLEANUP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _url(db: dict, name: str) -> str:
    credentials = quote(db.get("USER") or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db.get("HOST") or "127.0.0.1"
    return f"postgres://{credentials}@{host}:{db.get('PORT') or 5432}/{name}"


class BenchEnvironment:
    """Context manager: create and migrate the database, set up Django; undo it all on exit."""

    def __init__(self, child_overrides: dict[str, str] | None = None) -> None:
        # For investigations only (`--child-env DB_CONN_MAX_AGE=60`): settings tried out in the
        # web and worker processes. The JSON records the command line, so a figure says so.
        self.child_overrides = dict(child_overrides or {})
        self.run_id = uuid.uuid4().hex[:8]
        self.redis_url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
        self.redis_prefix = f"bench-{self.run_id}"
        self.server = dj_database_url.parse(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
        if "postgresql" not in self.server["ENGINE"]:
            raise SystemExit("The benchmarks need PostgreSQL: set DATABASE_URL to a postgres:// URL.")
        self.db_name = f"cloudportal_bench_{self.run_id}"
        self.database_url = _url(self.server, self.db_name)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench-{self.run_id}-"))
        self.image_store = self.tmp / "images"
        self._created = False
        self._undo: list[Callable[[], None]] = []

    def on_cleanup(self, undo: Callable[[], None]) -> None:
        """Also run `undo` at the end (it must tolerate having run already): a safety net for
        what an area makes outside the database, such as libvirt networks and pools."""
        self._undo.append(undo)

    # -- the database on the caller's server ------------------------------------------------

    def _admin(self) -> psycopg.Connection:
        """A connection to the server's maintenance database, for CREATE and DROP DATABASE."""
        last: Exception | None = None
        for name in ("postgres", "template1", self.server.get("NAME")):
            if not name:
                continue
            try:
                return psycopg.connect(_url(self.server, name), autocommit=True, connect_timeout=10)
            except psycopg.OperationalError as exc:
                last = exc
        raise SystemExit(f"Cannot reach PostgreSQL at {self.server.get('HOST')}: {last}")

    def _create_database(self) -> None:
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.db_name)))
        self._created = True

    def _drop_database(self) -> None:
        if not self._created:
            return
        from django.db import connections

        connections.close_all()
        with self._admin() as conn:
            # FORCE ends sessions a killed child may have left behind (PostgreSQL 13+).
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.db_name)))
        self._created = False

    # -- Redis ----------------------------------------------------------------------------------

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def _delete_keys(self) -> int:
        client = self.redis()
        try:
            keys = list(client.scan_iter(match=f"{self.redis_prefix}:*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
            return len(keys)
        finally:
            client.close()

    # -- the process environment ------------------------------------------------------------

    def child_env(self, **extra: str) -> dict[str, str]:
        """Environment of the web and worker processes this run starts."""
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "REDIS_PREFIX": self.redis_prefix,
            "IMAGE_STORE": str(self.image_store),
            # DEBUG keeps every SQL query in memory: it would distort both time and RSS.
            "DEBUG": "false",
            "INSTANCE_STOP_TIMEOUT": "5",
            "PYTHONUNBUFFERED": "1",
            **self.child_overrides,
            **extra,
        }

    def __enter__(self) -> BenchEnvironment:
        try:
            self._create_database()
            os.environ.update(
                {
                    "DJANGO_SETTINGS_MODULE": "portal.settings",
                    "DATABASE_URL": self.database_url,
                    "REDIS_URL": self.redis_url,
                    "REDIS_PREFIX": self.redis_prefix,
                    "IMAGE_STORE": str(self.image_store),
                    "DEBUG": "false",
                }
            )
            self.image_store.mkdir()
            import django
            from django.core.management import call_command

            django.setup()
            call_command("migrate", interactive=False, verbosity=0)
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        """Stop what was started, drop the database, delete the keys, remove the scratch dir.

        Each part runs even when an earlier one fails; the first failure is raised at the end.
        """
        from bench import processes

        # A second Ctrl-C or SIGTERM must not cut the cleaning short.
        previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in CLEANUP_SIGNALS}
        errors: list[BaseException] = []
        try:
            for step in (processes.stop_all, *reversed(self._undo), self._drop_database, self._delete_keys):
                try:
                    step()
                except Exception as exc:  # keep cleaning; report below
                    errors.append(exc)
            shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if errors:
            raise errors[0]

    def reset_data(self) -> None:
        """Empty every table, so each area starts from nothing (this database is ours alone)."""
        from django.core.management import call_command

        call_command("flush", interactive=False, verbosity=0)
