"""The Content-Security-Policy: on every page, strict, and nothing inline in our templates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from compute.models import Instance
from tests.ui.conftest import browser_client

pytestmark = pytest.mark.django_db
TEMPLATES = Path(django_settings.BASE_DIR) / "portal" / "templates"


def directives(response) -> dict[str, list[str]]:
    header = response.headers["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split("; ")}


def test_it_sends_a_strict_policy_with_every_page(alice, make_instance):
    instance = make_instance()
    client = browser_client(alice)

    for url in ["/", "/flavors/", "/accounts/login/", "/instances/", f"/instances/{instance.pk}", "/admin/login/"]:
        policy = directives(client.get(url))
        assert policy["default-src"] == ["'self'"], url
        assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"], url
        assert policy["frame-ancestors"] == ["'none'"] and policy["object-src"] == ["'none'"], url


def test_it_lets_the_console_reach_its_proxy_and_nothing_else(alice, make_instance, settings):
    settings.CONSOLE_PROXY_URL = "wss://console.example.net:6443"
    instance = make_instance()
    Instance.objects.filter(pk=instance.pk).update(vnc_port=5901)

    page = browser_client(alice).get(f"/instances/{instance.pk}/console")

    assert page.status_code == 200 and b'data-websocket-url="wss://console.example.net:6443/?token=' in page.content
    assert directives(page)["connect-src"] == ["'self'", "wss://console.example.net:6443"]


def test_it_serves_the_api_docs_under_the_same_policy_with_no_cdn(db):
    swagger = directives(browser_client().get("/api/docs/"))
    redoc = directives(browser_client().get("/api/redoc/"))

    assert swagger == directives(browser_client().get("/flavors/"))
    assert redoc["script-src"] == ["'self'"] and redoc["default-src"] == ["'self'"]
    assert redoc["style-src"][0] == "'self'" and all(s.startswith("'sha256-") for s in redoc["style-src"][1:])
    assert not any("https:" in source or "unsafe" in source for sources in redoc.values() for source in sources)


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\ssrc=)(?![^>]*application/json)[^>]*>", re.IGNORECASE)
INLINE_STYLE = re.compile(r"<style[\s>]|\sstyle=|\son[a-z]+=", re.IGNORECASE)


@pytest.mark.parametrize("template", sorted(TEMPLATES.rglob("*.html")), ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_it_keeps_scripts_styles_and_handlers_out_of_templates(template):
    text = template.read_text()

    assert not INLINE_SCRIPT.search(text)
    assert not INLINE_STYLE.search(text)
