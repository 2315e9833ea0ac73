"""The Chinese catalogue is complete: every string the portal marks for translation has a
reviewed Simplified Chinese text, the committed .mo matches the .po, and no template shows a
word outside a translation tag (the heuristic is in tests/portal/template_text.py).

Needs gettext (portal/scripts/system-deps.sh): makemessages runs xgettext and msgmerge.
"""

from __future__ import annotations

import gettext
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from tests.portal.template_text import untranslated

BASE = Path(settings.BASE_DIR)
# The packages whose strings have a catalogue of their own: the pages (portal), the invoice
# PDF and billing's refusals (billing), the refusals of compute's and tenants' services and the
# invitation mail (compute, tenants), and the number formats (base/units.py). makemessages runs
# inside each, so each catalogue holds its package only.
CATALOGUES = {
    "portal": ["static", "scripts", "locale"],
    "billing": ["locale", "migrations"],
    "compute": ["locale", "migrations"],
    "tenants": ["locale", "migrations"],
    "base": ["locale"],
}
PO = "locale/zh_Hans/LC_MESSAGES/django.po"
# Builds its HTML tag names from variables and holds no text of its own.
NO_TEXT = {"allauth/elements/button.html"}


def _msgids(po: Path, *options: str) -> list[str]:
    """The msgids of the entries msgattrib selects (the header, msgid "", left out)."""
    out = subprocess.run(["msgattrib", *options, "--no-wrap", str(po)], capture_output=True, text=True, check=True)  # noqa: S603, S607
    return [line for line in out.stdout.splitlines() if line.startswith("msgid ") and line != 'msgid ""']


@pytest.mark.parametrize("app", sorted(CATALOGUES))
def test_it_has_a_chinese_text_for_every_marked_string(app, tmp_path, settings, monkeypatch):
    # given: a copy of the app with its committed catalogue, so makemessages changes nothing real
    copy = tmp_path / app
    shutil.copytree(BASE / app, copy, ignore=shutil.ignore_patterns(*CATALOGUES[app], "__pycache__"))
    (copy / PO).parent.mkdir(parents=True)
    shutil.copy(BASE / app / PO, copy / PO)
    settings.LOCALE_PATHS = []
    monkeypatch.chdir(copy)

    # when: the strings of today's code are merged into it
    call_command("makemessages", locale=["zh_Hans"], no_location=True, no_obsolete=True, verbosity=0)

    # then: none new (empty) and none changed (fuzzy) since the catalogue was written
    missing = _msgids(copy / PO, "--untranslated") + _msgids(copy / PO, "--only-fuzzy")
    assert not missing, f"no reviewed Chinese in {app}/{PO} for:\n" + "\n".join(missing)


@pytest.mark.parametrize("app", sorted(CATALOGUES))
def test_it_ships_a_compiled_catalogue_that_matches_the_po(app, tmp_path):
    # A fresh clone works without gettext tools: the .mo is committed, and must be current.
    subprocess.run(["msgfmt", "--check", "-o", str(tmp_path / "fresh.mo"), str(BASE / app / PO)], check=True)  # noqa: S603, S607
    with (tmp_path / "fresh.mo").open("rb") as fresh, (BASE / app / PO).with_suffix(".mo").open("rb") as committed:
        assert gettext.GNUTranslations(committed)._catalog == gettext.GNUTranslations(fresh)._catalog


def test_no_template_shows_text_outside_a_translation_tag():
    root = BASE / "portal" / "templates"
    found = []
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_file() and name not in NO_TEXT:
            found += [f"{name}:{u.line}: {u.text}" for u in untranslated(path.read_text(), html=path.suffix == ".html")]
    assert not found, "visible text outside {% translate %}:\n" + "\n".join(found)


def test_it_finds_what_it_is_meant_to_find():
    # The heuristic itself: text, read attributes and shown literals count; markup, code,
    # translated text and the few terms written the same everywhere do not.
    source = (
        '<p title="Stop it">Hello <b>{{ name }}</b> <code>ls -l</code> {% translate "Fine" %} 5 GiB</p>'
        '<a class="btn" aria-label="{% translate "Ok" %}">{{ x|default:"Nothing here" }}</a>'
    )
    assert [u.text for u in untranslated(source)] == ["Stop it", "Hello", '"Nothing here"']
    assert untranslated("Hello {{ name }},", html=False)[0].text == "Hello ,"
