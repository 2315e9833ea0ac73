"""Fixtures of the browser UI tests: logged-in Django clients, an instance, and headless Chromium."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connections
from django.test import Client

from compute import operations, services
from compute.sizing import Size
from tests.conftest import actor
from tests.processes import CHROMIUM_FLAGS

ARTIFACTS = Path(django_settings.BASE_DIR) / "tests" / "artifacts"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(autouse=True)
def _ui_settings(settings):
    # allauth counts signups and logins per IP in the cache; a prefix per test keeps tests apart.
    cache = dict(settings.CACHES["default"])
    cache["KEY_PREFIX"] = f"{cache['KEY_PREFIX']}-{uuid.uuid4().hex[:8]}"
    settings.CACHES = {"default": cache}
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def browser_client(user=None) -> Client:
    """A client that checks CSRF like a browser does."""
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    return client


def post(client: Client, url: str, data: dict | None = None, **extra):
    """POST with the CSRF token a page would carry (the cookie is set by any earlier GET)."""
    if "csrftoken" not in client.cookies:
        client.get("/flavors/")
    return client.post(url, {**(data or {}), "csrfmiddlewaretoken": client.cookies["csrftoken"].value}, **extra)


@pytest.fixture
def make_instance(alice, tenant_a, host, image, flavor):
    """An instance of tenant A built on the simulated host: running unless built=False."""

    def make(name: str = "web-1", *, built: bool = True):
        request = services.CreateRequest(
            name=name, image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=str(flavor.pk)
        )
        instance = services.instance_create(actor=actor(alice, tenant_a), request=request)
        if built:
            operations.provision(instance.pk)
        instance.refresh_from_db()
        return instance

    return make


@pytest.fixture
def chromium(monkeypatch):
    """Headless Chromium (Debian's) driven by Playwright; yields a function that opens a page."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls that follow are
    # still plain synchronous ones.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        yield browser
        browser.close()
        # Playwright runs the test in a greenlet with its own context, and Django's connections
        # are context-local: the ones opened in there are closed in there, or they linger.
        connections.close_all()
