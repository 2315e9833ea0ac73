"""Cookies are marked Secure where the site is served over https, and only there."""

import runpy
from pathlib import Path

import pytest

from portal.management.commands.runportal import served_over_http

SETTINGS = Path(__file__).resolve().parents[2] / "portal" / "settings.py"


def cookie_security(monkeypatch, **environ: str) -> tuple[bool, bool]:
    """The cookie settings that portal/settings.py computes from this environment."""
    for name in ("SECURE_COOKIES", "PORTAL_BASE_URL", "DEBUG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    computed = runpy.run_path(str(SETTINGS))
    return computed["SESSION_COOKIE_SECURE"], computed["CSRF_COOKIE_SECURE"]


@pytest.mark.parametrize(
    "environ, secure",
    [
        ({}, (True, True)),  # production-like: debug off
        ({"DEBUG": "1"}, (False, False)),
        ({"PORTAL_BASE_URL": "https://cloud.example.net"}, (True, True)),
        ({"PORTAL_BASE_URL": "http://192.0.2.10:8000"}, (False, False)),
        ({"PORTAL_BASE_URL": "http://192.0.2.10:8000", "SECURE_COOKIES": "1"}, (True, True)),
        ({"PORTAL_BASE_URL": "https://cloud.example.net", "SECURE_COOKIES": "0"}, (False, False)),
    ],
)
def test_it_marks_cookies_secure_only_for_an_https_site(monkeypatch, environ, secure):
    assert cookie_security(monkeypatch, **environ) == secure


@pytest.mark.parametrize(
    "environ, added",
    [
        ({}, {"SECURE_COOKIES": "0"}),
        ({"PORTAL_BASE_URL": "http://192.0.2.10:8000"}, {"SECURE_COOKIES": "0"}),
        ({"PORTAL_BASE_URL": "https://cloud.example.net"}, {}),  # TLS terminated in front of it
        ({"SECURE_COOKIES": "1"}, {}),
    ],
)
def test_it_turns_secure_cookies_off_where_runportal_serves_plain_http(monkeypatch, environ, added):
    assert served_over_http(environ) == added
    assert cookie_security(monkeypatch, **environ, **added) == (not added, not added)
