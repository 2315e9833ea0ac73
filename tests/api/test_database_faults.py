"""A database that cannot be reached makes the API answer a JSON 503 with Retry-After, never an
HTML 500: in DRF views, and before any view runs (a middleware reading the session)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from django.db import connection
from django.test import Client

from tests.conftest import token_for


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def unreachable() -> Iterator[None]:
    """The next connection goes to a port where no server listens, as when PostgreSQL is down."""
    connection.close()
    before = connection.settings_dict["PORT"], connection.settings_dict["HOST"]
    connection.settings_dict["HOST"], connection.settings_dict["PORT"] = "127.0.0.1", str(_closed_port())
    try:
        yield
    finally:
        connection.settings_dict["PORT"], connection.settings_dict["HOST"] = before
        connection.close()


@contextmanager
def lost() -> Iterator[None]:
    """The server ends this process's connection (a restart, a failover) between two requests."""
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as other:
        assert other.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
    try:
        yield
    finally:
        connection.close()


FAULTS = {"unreachable": unreachable, "lost": lost}


def assert_json_503(response) -> None:
    assert response.status_code == 503, (response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "unavailable"
    assert "database" in response.json()["detail"]
    assert int(response["Retry-After"]) > 0


@pytest.mark.parametrize("fault", FAULTS)
def test_it_answers_a_database_fault_in_an_api_view_with_a_json_503(transactional_db, alice, tenant_a, fault):
    client = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {token_for(alice, tenant_a)}")

    with FAULTS[fault]():
        response = client.get("/api/v1/tenant")

    assert_json_503(response)
    # and the next request, with the database back, works
    assert client.get("/api/v1/tenant").status_code == 200


def touch_user(get_response):
    """A middleware that reads request.user on every request, as an authentication check would."""

    def middleware(request):
        request.user.is_authenticated  # noqa: B018 - loads the session and the user from the database
        return get_response(request)

    return middleware


@pytest.mark.parametrize("fault", FAULTS)
def test_it_answers_a_database_fault_outside_any_view_with_a_json_503(transactional_db, settings, alice, fault):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, f"{__name__}.touch_user"]
    client = Client(raise_request_exception=False)
    client.force_login(alice)

    with FAULTS[fault]():
        api = client.get("/api/v1/tenant")
    with FAULTS[fault]():
        page = client.get("/")

    assert_json_503(api)
    # pages keep Django's HTML error page
    assert page.status_code == 500
    assert not page["Content-Type"].startswith("application/json")
