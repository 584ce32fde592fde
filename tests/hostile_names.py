"""Names a hostile visitor types, in one place: every page must show them as typed.

Each is a class, dataset or file name a zip, a server folder or a damaged state file can carry.
HOSTILE_NAMES may hold any character; FOLDER_NAMES are those a Linux folder can be named (no
slash), for datasets on disk. The markup checks used by the page sweep are here too.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from typing import Any

from markdown_it import MarkdownIt

HOST = "host.invalid"  # never resolves; any address naming it came from a name

# name -> a part of it that survives when the name is misread as markup: a page showing that
# part must show the whole name (else formatting swallowed the rest).
HOSTILE = {
    f"![t](https://{HOST}/x.png)": "x.png",      # a Markdown image: browsers would fetch it
    f"[click](https://{HOST}/y)": "click",       # a link
    "**qbold**": "qbold",                          # formatting swallows the stars
    "$$q^2$$": "q^2",                            # Streamlit's maths
    "<img src=x onerror=alert(1)>": "onerror",   # raw HTML
    "<b>qhtml</b>": "qhtml",                       # HTML that plotly renders in charts
    ":red[x]": "red[x]",                         # Streamlit colour directive
    ":smile:": "smile",                          # emoji shortcode
    ":material/home:": "material/home",          # icon shortcode
    "_qunder_ `qcode` ~~qgone~~": "qunder",          # emphasis, code, strikethrough
    "# qheading": "qheading",                      # a heading at the start of a line
    "1. qlist": "qlist",                           # an ordered list
    "- qitem": "qitem",                            # a bullet list
    "&lt;qentity&gt;": "qentity",                  # HTML entities
    f"www.{HOST}": f"www.{HOST}",                # a bare address (autolink)
    '=HYPERLINK("http://' + HOST + '")': "HYPERLINK",  # a spreadsheet formula
    "l" + "o" * 90 + "ng": "looooooooooooooooooo",     # a very long name
}
HOSTILE_NAMES = list(HOSTILE)
FOLDER_NAMES = [n for n in HOSTILE_NAMES if "/" not in n]
HOSTILE_DATASET = f"**data** ![d](https://{HOST}/d.png)"

# Control characters and bidi overrides: refused as names (zips, folders, builder).
CONTROL_NAMES = ["line1\nline2", "tab\there", "esc\x1b[31mred", "bidi\u202egnp.exe",
                 "nul\x00x", "zero\u200bwidth", "bell\x07"]

_MD = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
_WORD_JOINER = "\u2060"
_ESCAPED = re.compile(r"\\[!-/:-@\[-`{-~]")
# What Streamlit reads beyond CommonMark, looked for in the source with escaped characters
# removed: maths, colour directives that are not the studio's own, emoji shortcodes.
_STREAMLIT_MARKUP = [
    re.compile(r"(?<!\$)\$\$+(?!\$)[\s\S]*?\$\$"),
    re.compile(r"(?<!\$)\$(?![\s$])[^$\n]*?[^\s$]\$(?!\d)"),
    re.compile(r":(?!green-badge|red-badge|orange|gray|small|material)[a-z][a-z0-9-]*\["),
    re.compile(r":(?:smile|material/home):"),
]


def visible_text(markdown: str) -> str:
    """What a reader sees of a Markdown source: rendered, tags dropped, entities decoded."""
    rendered = _MD.render(markdown)
    return html.unescape(re.sub(r"<[^>]+>", "", rendered)).replace(_WORD_JOINER, "")


def markup_problems(markdown: str) -> list[str]:
    """Ways a Markdown source (as Streamlit would render it) fetches, links or reformats a
    hostile name; empty when none."""
    rendered = _MD.render(markdown)
    problems = []
    if re.search(r"(src|href)=\"[^\"]*" + re.escape(HOST), rendered):
        problems.append("an address from a name became a link or an image")
    if re.search(r"<img|<b>qhtml", rendered):
        problems.append("HTML from a name is rendered")
    seen = visible_text(markdown)
    problems += [f"{name!r} is not shown as typed" for name, part in HOSTILE.items()
                 if part in seen and name not in seen]
    unescaped = _ESCAPED.sub("", markdown)
    problems += [f"Streamlit markup from a name: {p.pattern}" for p in _STREAMLIT_MARKUP
                 if p.search(unescaped)]
    if "www." + HOST in unescaped:
        problems.append("a bare address from a name becomes a link")
    return problems


def plotly_problems(spec: str) -> list[str]:
    """Names that a plotly figure would read as HTML (plotly renders <b>, <a href>, <br> in
    axis labels, legends, titles, annotations and hover text; customdata is not shown)."""

    def walk(value: Any) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for key, item in value.items():
                if key != "customdata":
                    yield from walk(item)
        elif isinstance(value, list):
            for item in value:
                yield from walk(item)

    return [f"plotly text read as HTML: {text[:80]!r}" for text in walk(json.loads(spec))
            if re.search(r"<img|<b>qhtml|<a ", text)]
