"""In Chromium: the API documentation is served by the site itself (Swagger UI on /api/docs/,
ReDoc on /api/redoc/, from drf-spectacular-sidecar) and works under the site's strict CSP, with
nothing loaded from elsewhere."""

from __future__ import annotations

import pytest

from tests.ui.conftest import DESKTOP

pytestmark = pytest.mark.django_db(transaction=True)

# ReDoc shows a vendor logo from its makers' CDN in the sidebar; the CSP blocks it (nothing is
# loaded from elsewhere), ReDoc then hides the image, and the page is complete without it.
REDOC_LOGO = "Loading the image 'https://cdn.redoc.ly/redoc/logo-mini.svg' violates"


def directives(response) -> dict[str, list[str]]:
    header = response.headers["content-security-policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split("; ")}


def open_page(chromium, url: str):
    """A fresh page on `url`: what its console reported, and every host that answered it (a
    request the CSP blocks never leaves the browser)."""
    page = chromium.new_context(viewport=DESKTOP).new_page()
    problems: list[str] = []
    requested: set[str] = set()
    page.on("console", lambda msg: msg.type in ("error", "warning") and problems.append(msg.text))
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("response", lambda response: requested.add(response.url.split("/")[2]))
    response = page.goto(url)
    return page, response, problems, requested


def test_it_renders_swagger_ui_with_every_operation_and_no_console_error(chromium, live_server):
    page, response, problems, requested = open_page(chromium, f"{live_server.url}/api/docs/")

    assert response.status == 200
    page.locator(".opblock").first.wait_for(timeout=30_000)
    page.wait_for_load_state("networkidle")
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/api/v1/instances" in [p.replace("\u200b", "") for p in paths]
    assert page.locator(".opblock").count() > 30
    # an operation opens, with its responses
    page.locator(".opblock-summary").filter(has_text="/api/v1/flavors").first.click()
    page.locator(".opblock-body .responses-table").first.wait_for()
    assert problems == []
    assert requested == {live_server.url.split("/")[2]}
    policy = directives(response)
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]


def test_it_renders_redoc_under_the_csp(chromium, live_server):
    page, response, problems, requested = open_page(chromium, f"{live_server.url}/api/redoc/")

    assert response.status == 200
    page.locator("[data-section-id]").first.wait_for(timeout=30_000)
    page.wait_for_load_state("networkidle")
    assert page.locator("[data-section-id]").count() > 30
    assert page.get_by_role("heading", name="Cloud Portal API").is_visible()
    # its search works (an index in a Worker)
    page.get_by_placeholder("Search...").fill("instances")
    page.locator("[data-role='search:results'] li").first.wait_for()
    assert [p for p in problems if REDOC_LOGO not in p] == []
    assert requested == {live_server.url.split("/")[2]}
    policy = directives(response)
    assert policy["script-src"] == ["'self'"] and "'unsafe-inline'" not in policy["style-src"]


def test_it_serves_no_cdn_address_in_the_pages(client):
    for url in ["/api/docs/", "/api/docs/?script=", "/api/redoc/"]:
        body = client.get(url).content.decode()
        assert "cdn." not in body and "googleapis" not in body, url
        assert "http://" not in body.replace("http://testserver", "") or url.endswith("script="), url
