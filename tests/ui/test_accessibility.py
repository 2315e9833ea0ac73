"""Accessibility in Chromium: a keyboard focus ring that shows in the navbar, and a colour mode that
follows the system's setting (Bootstrap's data-bs-theme, set by a static script under the CSP)."""

from __future__ import annotations

import re

import pytest

from tests.ui.conftest import DESKTOP
from tests.ui.demo_data import meter_samples
from tests.ui.test_browser import Watcher, http_cookies, session_cookie, shot  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("http_cookies")]

FOCUSED = """() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  const nav = el.closest('nav.navbar');
  return {
    inNavbar: !!nav,
    text: el.textContent.trim(),
    outlineStyle: style.outlineStyle,
    outlineWidth: parseFloat(style.outlineWidth),
    outlineColor: style.outlineColor,
    boxShadow: style.boxShadow,
    navbarBackground: nav ? getComputedStyle(nav).backgroundColor : '',
  };
}"""


# Any CSS colour as rgb(), the form luminance() reads.
RGB = """colour => { const probe = document.createElement('i'); probe.style.color = colour;
  document.body.append(probe); const rgb = getComputedStyle(probe).color; probe.remove(); return rgb; }"""


def channels(css_colour: str) -> list[float]:
    """r, g, b (0-255) and alpha of an rgb()/rgba() colour as getComputedStyle reports it."""
    values = [float(v) for v in re.findall(r"[\d.]+", css_colour)]
    return values[:3] + [values[3] if len(values) > 3 else 1.0]


def luminance(css_colour: str) -> float:
    """WCAG's relative luminance of an opaque colour."""

    def linear(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b, _alpha = channels(css_colour)
    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)


def contrast(foreground: str, background: str) -> float:
    """WCAG's contrast ratio, a translucent foreground blended onto the (opaque) background."""
    *fg, alpha = channels(foreground)
    bg = channels(background)[:3]
    blended = "rgb({})".format(", ".join(str(alpha * f + (1 - alpha) * b) for f, b in zip(fg, bg, strict=True)))
    light, dark = sorted([luminance(blended), luminance(background)], reverse=True)
    return (light + 0.05) / (dark + 0.05)


def open_page(chromium, live_server, settings, user, path: str, scheme: str, watcher: Watcher):
    context = chromium.new_context(viewport=DESKTOP, color_scheme=scheme)
    if user is not None:
        context.add_cookies([session_cookie(user, live_server, settings)])
    page = watcher.attach(context.new_page())
    page.goto(f"{live_server.url}{path}")
    return page


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_it_rings_every_navbar_element_the_keyboard_reaches(chromium, live_server, settings, alice, tenant_a, scheme):
    watcher = Watcher()
    page = open_page(chromium, live_server, settings, alice, "/instances/", scheme, watcher)

    # the skip link comes first, then the navbar's brand, links and menus
    ringed = []
    for _ in range(12):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED)
        if focused["text"] == "Skip to content":
            continue
        if not focused["inNavbar"]:
            break
        ringed.append(focused)

    assert len(ringed) >= 5, ringed  # brand, Instances, Create, Tenant, Flavors & prices, ...
    for focused in ringed:
        assert focused["outlineStyle"] != "none" and focused["outlineWidth"] >= 2, focused
        assert contrast(focused["outlineColor"], focused["navbarBackground"]) >= 3, focused
    assert watcher.unexpected() == ""


@pytest.mark.parametrize(("scheme", "dark"), [("light", False), ("dark", True)])
def test_it_follows_the_systems_colour_scheme_within_the_csp(
    chromium, live_server, settings, alice, tenant_a, make_instance, scheme, dark
):
    instance = make_instance("web-1")
    meter_samples(instance)  # so the charts are drawn
    watcher = Watcher()

    pages = {"home": "/", "catalogue": "/flavors/", "instance": "/instances/{pk}", "console": "/instances/{pk}/console"}
    for name, path in {**pages, "tokens": "/tenant/tokens"}.items():
        page = open_page(chromium, live_server, settings, alice, path.format(pk=instance.pk), scheme, watcher)
        page.wait_for_load_state("networkidle")  # the instance page's charts fetch their data after load
        theme = page.evaluate("() => document.documentElement.dataset.bsTheme")
        background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        text = page.evaluate("() => getComputedStyle(document.body).color")

        shot(page, f"{name}-{scheme}")
        assert theme == scheme, path
        assert (luminance(background) < 0.1) is dark, (path, background)
        assert contrast(text, background) >= 7, (path, text, background)
        if name == "instance":  # the charts' ticks and labels read against the page too
            page.wait_for_function("() => window.Chart && Object.keys(window.Chart.instances).length === 3")
            ticks = page.evaluate("() => window.Chart.defaults.color")
            assert contrast(page.evaluate(RGB, ticks), background) >= 4.5, ticks
        page.context.close()
    assert watcher.unexpected() == ""


def test_it_follows_a_change_of_the_system_setting_without_a_reload(chromium, live_server, settings, db):
    watcher = Watcher()
    page = open_page(chromium, live_server, settings, None, "/", "light", watcher)

    page.emulate_media(color_scheme="dark")

    page.wait_for_function("() => document.documentElement.dataset.bsTheme === 'dark'")
    assert luminance(page.evaluate("() => getComputedStyle(document.body).backgroundColor")) < 0.1
    assert watcher.unexpected() == ""
