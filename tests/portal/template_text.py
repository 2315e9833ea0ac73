"""Finds words a person reads in a template that are not inside a translation tag.

A heuristic, not an HTML parser: template tags, variables and comments are masked first
(`{% blocktranslate %}…{% endblocktranslate %}` and `{% comment %}` blocks whole), then the
rest is scanned as HTML. What counts as visible text:
- text between tags, outside <script>, <style>, <code>, <pre>, <kbd> and <samp> (code
  samples and commands stay as they are);
- the values of the attributes people read or hear: title, alt, placeholder, aria-label;
- string literals a template hands on to be shown: `default:"…"` and `title="…"`,
  `label="…"` in tag arguments (wrap them as _("…")).
A run of text counts when it holds a word of two or more Latin letters that is not one of the
few terms written the same in every language (API, CPU, GiB…). Mail templates (.txt) are all
text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TEMPLATE_BLOCK = re.compile(
    r"\{%\s*(blocktranslate|blocktrans|comment|verbatim)\b.*?%\}.*?\{%\s*end\1\s*%\}"
    r"|\{%.*?%\}|\{\{.*?\}\}|\{#.*?#\}",
    re.S,
)
RAW_ELEMENTS = ("script", "style", "code", "pre", "kbd", "samp")
READ_ATTRIBUTES = ("title", "alt", "placeholder", "aria-label")
ATTRIBUTE = re.compile(r"""([a-zA-Z_:][-a-zA-Z0-9_:.]*)\s*=\s*("[^"]*"|'[^']*')""")
LITERAL_ARGUMENT = re.compile(r"""(?:default:|\btitle=|\blabel=)("[^"]*"|'[^']*')""")
WORD = re.compile(r"[A-Za-z]{2,}")
# Written the same in Chinese pages too: product and unit names, protocols.
SAME_IN_EVERY_LANGUAGE = {
    "API",
    "CPU",
    "vCPU",
    "vCPUs",
    "RAM",
    "GiB",
    "MiB",
    "KiB",
    "TiB",
    "IPv",
    "IP",
    "SSH",
    "UUID",
    "VNC",
    "DHCP",
    "DNS",
    "HTTP",
    "HTTPS",
    "CSV",
    "PDF",
    "TOTP",
    "OpenAPI",
    "ReDoc",
    "Swagger",
    "UI",
    "UTC",
    "EUR",
    "USD",
    "ID",
    "OK",
    "URL",
    "vdb",
    "vda",
    "MAC",
    "TCP",
    "UDP",
    "IPv4",
    "IPv6",
    "SLA",
    "ISO",
    "cpt",  # the prefix of API tokens
}


@dataclass(frozen=True)
class Untranslated:
    line: int
    text: str


def _mask(source: str) -> str:
    return TEMPLATE_BLOCK.sub(lambda m: "\0" * len(m.group(0)), source)


def _visible(text: str) -> bool:
    return any(word not in SAME_IN_EVERY_LANGUAGE for word in WORD.findall(text.replace("\0", " ")))


def _text_runs(masked: str):
    """(start, end) of each text run and each read attribute value, in the masked source."""
    pos, raw_until = 0, None
    while pos < len(masked):
        if masked.startswith("<!--", pos):
            pos = masked.find("-->", pos) + 3 if "-->" in masked[pos:] else len(masked)
            continue
        if masked[pos] == "<" and re.match(r"</?[a-zA-Z!]", masked[pos : pos + 3]):
            end = masked.find(">", pos)
            end = len(masked) if end < 0 else end + 1
            tag = masked[pos:end]
            name = re.match(r"</?([a-zA-Z0-9]+)", tag)
            name = name.group(1).lower() if name else ""
            if raw_until:
                if tag.startswith("</") and name == raw_until:
                    raw_until = None
            else:
                if not tag.startswith("</") and name in RAW_ELEMENTS:
                    raw_until = name
                for attr in ATTRIBUTE.finditer(tag):
                    if attr.group(1).lower() in READ_ATTRIBUTES:
                        yield pos + attr.start(2) + 1, pos + attr.end(2) - 1
            pos = end
            continue
        end = masked.find("<", pos + 1)
        end = len(masked) if end < 0 else end
        if not raw_until:
            yield pos, end
        pos = end


def _inside_a_tag(masked: str, pos: int) -> bool:
    return masked.rfind("<", 0, pos) > masked.rfind(">", 0, pos)


def untranslated(source: str, *, html: bool = True) -> list[Untranslated]:
    masked = _mask(source)
    runs = list(_text_runs(masked)) if html else [(0, len(masked))]
    found = []
    for start, end in runs:
        if _visible(masked[start:end]):
            found.append(
                Untranslated(source.count("\n", 0, start) + 1, " ".join(masked[start:end].replace("\0", " ").split()))
            )
    for match in TEMPLATE_BLOCK.finditer(source):
        if _inside_a_tag(masked, match.start()):
            continue  # a class name or a data value, not text
        for literal in LITERAL_ARGUMENT.finditer(match.group(0)):
            if _visible(literal.group(1)):
                found.append(Untranslated(source.count("\n", 0, match.start()) + 1, literal.group(1)))
    return found
