"""Screenshots of the portal for the docs, in one language, from fresh demo data.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/cp_docs \\
        .venv/bin/python -m tests.ui.screenshots --lang en --out docs/screenshots

Makes its own database (<name>_screenshots, dropped afterwards), fills it with tests/ui/demo_data,
serves the portal on a free loopback port and saves full-page PNGs 1280 px wide:
create, instance, console, billing, firewall and ops, each named <page>.<lang>.png. The language reaches
Django the way a browser's choice does: the language cookie and an Accept-Language header.

The hosts are simulated (libvirt's test driver), so no guest runs and the console shot shows
the page that says the console is unavailable; with --real-console, web-1 is the project's tiny
Linux booted on the local libvirtd (tests/ui/demo_guest.py) and the console shows its screen.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

VIEWPORT = {"width": 1280, "height": 900}
# Playwright's locale (the browser's own date and number formats) for a Django language code.
BROWSER_LOCALES = {"en": "en-GB", "zh-hans": "zh-CN"}
CONSOLE_SETTLE_MS = 8000  # the tiny Linux boots and prints its address on the VGA console


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lang", default="en", help="a language code of settings.LANGUAGES (en, zh-hans)")
    parser.add_argument("--out", default="docs/screenshots", type=Path, help="where the PNGs go")
    parser.add_argument(
        "--real-console",
        action="store_true",
        help="boot the tiny Linux on qemu:///system for web-1, so the console shows a real screen",
    )
    return parser.parse_args(argv)


def setup_django(work_dir: Path) -> str:
    """Django on a fresh database of its own; returns the original database name."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django
    from django.conf import settings

    django.setup()
    from portal.celery import app as celery_app
    from tests.conftest import RUN_PREFIX  # importing it puts Celery's keys under this prefix

    database = settings.DATABASES["default"]
    original = database["NAME"]
    database.setdefault("TEST", {})["NAME"] = f"{original}_screenshots"
    settings.IMAGE_STORE = work_dir / "images"
    settings.IMAGE_STORE.mkdir()
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False  # the server speaks http
    settings.REDIS_PREFIX = RUN_PREFIX  # console tokens; swept at the end
    settings.DEBUG = False
    # Builds and power actions run at commit in this process, as a worker would run them.
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    from django.db import connection

    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    return original


def serve():
    """The portal with its static files on a free loopback port, in a thread."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.test.testcases import LiveServerThread

    server = LiveServerThread("127.0.0.1", StaticFilesHandler)
    server.daemon = True
    server.start()
    server.is_ready.wait()
    if server.error:
        raise server.error
    return server


def login_cookies(user, url: str, lang: str) -> list[dict]:
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    return [
        {"name": settings.SESSION_COOKIE_NAME, "value": session, "url": url},
        {"name": settings.LANGUAGE_COOKIE_NAME, "value": lang, "url": url},
    ]


def take(browser, url: str, user, lang: str, shots: list[tuple[str, str]], out: Path) -> list[Path]:
    context = browser.new_context(
        viewport=VIEWPORT,
        locale=BROWSER_LOCALES.get(lang, lang),
        extra_http_headers={"Accept-Language": lang},
    )
    context.add_cookies(login_cookies(user, url, lang))
    saved = []
    for name, path in shots:
        page = context.new_page()
        page.goto(f"{url}{path}")
        page.wait_for_load_state("networkidle")  # charts fetch their points after load
        get_ready(name, page)
        target = out / f"{name}.{lang}.png"
        page.screenshot(path=str(target), full_page=True)
        saved.append(target)
        page.close()
    context.close()
    return saved


def get_ready(name: str, page) -> None:
    """Each page as a customer sees it: the create page filled in up to the button, the console
    connected with the guest's screen drawn (when there is a real one)."""
    if name == "create":
        page.locator("#id_name").fill("web-2")
        page.locator("label.choice-card", has_text="Debian 12").first.click()
        page.locator("label.choice-card", has_text="s1.medium").first.click()
        page.locator("#ssh-keys-label ~ .form-check input").first.check()
        page.wait_for_load_state("networkidle")  # the price summary follows over htmx
    if name == "console" and page.locator("#console-screen").count():
        page.wait_for_selector("body[data-console-state=connected]", timeout=30_000)
        page.wait_for_timeout(CONSOLE_SETTLE_MS)
    page.mouse.move(0, 0)
    page.evaluate("() => window.scrollTo(0, 0)")


def shoot(args: argparse.Namespace, work_dir: Path, stack: ExitStack) -> list[Path]:
    from django.db import connections
    from playwright.sync_api import sync_playwright

    from tests.processes import CHROMIUM_FLAGS
    from tests.ui import demo_guest
    from tests.ui.demo_data import make_demo

    guest_host = None
    if args.real_console:
        guest_host = stack.enter_context(demo_guest.real_host())
        demo_guest.link_tiny_image(work_dir / "images")
    demo = make_demo(work_dir=work_dir, image_store=work_dir / "images", guest_host=guest_host)
    server = serve()
    stack.callback(server.terminate)
    url = f"http://{server.host}:{server.port}"
    if args.real_console:
        stack.enter_context(demo_guest.console_proxy_for(url))
    pk = demo.instance.pk
    customer = [
        ("create", "/instances/new"),
        ("instance", f"/instances/{pk}"),
        ("console", f"/instances/{pk}/console"),
        ("billing", "/tenant/billing"),
        ("firewall", "/tenant/firewall"),
    ]
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's loop; the ORM stays sync
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        saved = take(browser, url, demo.owner, args.lang, customer, args.out)
        saved += take(browser, url, demo.operator, args.lang, [("ops", "/ops/")], args.out)
        browser.close()
        # Connections opened in Playwright's greenlet are that context's: closed there.
        connections.close_all()
    return saved


def sweep_redis() -> None:
    from tests.conftest import RUN_PREFIX
    from tests.processes import redis_client

    client = redis_client()
    keys = list(client.scan_iter(match=f"{RUN_PREFIX}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="portal-shots-") as tmp:
        original = setup_django(Path(tmp))
        from django.db import connection

        try:
            with ExitStack() as stack:
                saved = shoot(args, Path(tmp), stack)
        finally:
            connection.creation.destroy_test_db(original, verbosity=0)
            sweep_redis()
    for path in saved:
        print(f"{path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
