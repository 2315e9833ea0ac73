"""deploy/backup.sh and deploy/restore.sh: a dump of a live database restored into a fresh one,
which then passes the smoke checks and holds the same rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

from tests.conftest import RUN_ID
from tests.processes import database_url

DEPLOY = Path(settings.BASE_DIR) / "deploy"


def run(argv: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, cwd=settings.BASE_DIR, env={**os.environ, "PYTHON": sys.executable, **env},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def database(name: str) -> str:
    return database_url({**settings.DATABASES["default"], "NAME": name})


def drop(name: str) -> None:
    with psycopg.connect(database("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_database():
    """A database name nobody uses; dropped afterwards."""
    name = f"cp_restore_{RUN_ID}_{os.getpid()}"
    yield database(name)
    drop(name)


# Rows of every kind the smoke check counts that need no hypervisor.
SEED = """
from compute.models import Flavor
from tenants.models import User
from tenants.services import personal_tenant_for
for n in range(3):
    personal_tenant_for(User.objects.create_user(username=f"u{n}@example.com", email=f"u{n}@example.com"))
Flavor.objects.create(name="backup.small", vcpus=1, memory_mb=512, disk_gb=5)
"""


@pytest.fixture(scope="module")
def production_database():
    """A database as production has it: built by `manage.py migrate` (the suite's own test
    database is made without migrations), with a few users, tenants and a flavor."""
    name = f"cp_backup_{RUN_ID}_{os.getpid()}"
    with psycopg.connect(database("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = database(name)
    try:
        for argv in (["migrate", "-v0"], ["shell", "-c", SEED]):
            done = run([sys.executable, "manage.py", *argv], DATABASE_URL=url)
            assert done.returncode == 0, done.stdout + done.stderr
        yield url
    finally:
        drop(name)


def counts(url: str) -> dict[str, int]:
    tables = {"users": "tenants_user", "tenants": "tenants_tenant", "flavors": "compute_flavor"}
    with psycopg.connect(url) as conn:
        return {key: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for key, table in tables.items()}  # noqa: S608


def test_it_restores_a_dump_into_a_fresh_database_that_passes_the_smoke_checks(
    production_database, tmp_path, fresh_database
):
    # given: a database with users and tenants, backed up
    backup = run([str(DEPLOY / "backup.sh"), str(tmp_path)], DATABASE_URL=production_database)
    assert backup.returncode == 0, backup.stderr
    dump = Path(backup.stdout.strip())
    assert dump.exists() and Path(f"{dump}.sha256").exists()
    # when: restored into a new database
    restore = run([str(DEPLOY / "restore.sh"), str(dump), fresh_database])
    # then: the smoke checks pass there, on the same rows
    assert restore.returncode == 0, restore.stdout + restore.stderr
    report = json.loads(restore.stdout.strip().splitlines()[-1])
    assert report["ok"] is True
    source = counts(production_database)
    assert source["users"] == 3 and source["tenants"] == 3
    assert counts(fresh_database) == source
    assert (report["counts"]["users"], report["counts"]["tenants"]) == (3, 3)


def test_it_never_restores_over_an_existing_database(production_database, tmp_path):
    # given: a dump, and the database it came from as the target
    dump = Path(run([str(DEPLOY / "backup.sh"), str(tmp_path)], DATABASE_URL=production_database).stdout.strip())
    # when
    restore = run([str(DEPLOY / "restore.sh"), str(dump), production_database])
    # then
    assert restore.returncode == 1
    assert "exists" in restore.stderr


def test_it_refuses_a_damaged_dump(production_database, tmp_path, fresh_database):
    # given: a dump whose bytes changed after its checksum was written
    dump = Path(run([str(DEPLOY / "backup.sh"), str(tmp_path)], DATABASE_URL=production_database).stdout.strip())
    with dump.open("r+b") as fh:
        fh.seek(100)
        fh.write(b"\0" * 16)
    # when
    restore = run([str(DEPLOY / "restore.sh"), str(dump), fresh_database])
    # then: refused before any database was made
    assert restore.returncode != 0
    name = fresh_database.rsplit("/", 1)[1]
    with psycopg.connect(database("postgres")) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name]).fetchone()[0] == 0
