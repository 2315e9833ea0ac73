"""The portal's PostgreSQL database: made on the server when it is not there yet."""

from __future__ import annotations

import psycopg
from django.conf import settings
from psycopg import sql


def ensure_database() -> bool:
    """Create the database DATABASES names on its server if it is missing; True if it did.
    For `make run` on a fresh machine: the server is there (the project starts it), the
    database not yet. It connects to the server's `postgres` database to do it."""
    db = settings.DATABASES["default"]
    server = {
        "host": db.get("HOST") or "127.0.0.1",
        "port": db.get("PORT") or 5432,
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
    }
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))
    return True
