"""Names are data: text a user typed, escaped for Streamlit's Markdown.

Streamlit renders Markdown in st.markdown, captions, alerts, headings, progress and status
texts, image captions, and the labels of buttons, expanders, tabs, radios and uploaders. A
class named `![t](https://host/x)` would make every visitor's browser fetch that address,
`**bold**` would vanish into formatting, `:red[x]` and `:smile:` would colour or become an
emoji, `$x$` would become maths. Every piece of user text put into one of those elements goes
through md(), which escapes only what Markdown would read, so ordinary names stay as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from core import text as core_text

# Read by Markdown wherever they stand: emphasis, code, links and images, raw HTML, maths
# (Streamlit's $...$), strikethrough, email autolinks; the backslash itself.
_ALWAYS = frozenset("\\`*<$~@")
# Brackets make links, images, references and Streamlit's :colour[...] directives; text that
# could form one has them escaped (plain "[note]" stays as it is).
_LINKISH = re.compile(r"\]\s*[(\[:]|!\[|:[A-Za-z][\w-]*\[")
# Read only at the start of a line: headings, quotes, lists, tables, setext underlines.
_AT_START = re.compile(r"^(?:[#>+\-=|]|\d+(?=[.)]))")
# Emoji shortcodes (:smile:) and icons (:material/x:) are found in the text after parsing,
# where a backslash no longer shows: an invisible word joiner after the colon breaks them.
_SHORTCODE = re.compile(r":(?=\+1:|-1:|[\w+-]*[A-Za-z][\w+-]*:|material/|streamlit:)")
# Bare web addresses become links (GFM autolink literals).
_ADDRESS = re.compile(r"(?i)(?<=[a-z])(:)(?=//)|(?<=www)(\.)")
_ENTITY = re.compile(r"&(?=#?\w+;)")
# An underscore opens emphasis only next to a non-alphanumeric character.
_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")
WORD_JOINER = "\u2060"


def md(value: Any) -> str:
    """value as Markdown that renders as exactly its text (control characters shown escaped).

    Use it for every class, dataset, file or run name, every message that quotes one, and any
    other text from a user or from a file under the studio home, put into an element that
    renders Markdown. Plain names (letters, digits, spaces, dots, dashes) come back unchanged.
    """
    text = core_text.printable(value)
    special = _ALWAYS | ({"[", "]"} if _LINKISH.search(text) else set())
    text = "".join("\\" + c if c in special else c for c in text)
    text = _UNDERSCORE.sub(r"\\_", text)
    text = _ENTITY.sub(r"\\&", text)
    text = _ADDRESS.sub(lambda m: "\\" + m.group(0), text)
    text = _SHORTCODE.sub(":" + WORD_JOINER, text)
    match = _AT_START.match(text)
    if match:
        head = match.group(0)
        text = (head + "\\" + text[len(head):]) if head[0].isdigit() else "\\" + text
    return text


def md_list(values: Iterable[Any], sep: str = ", ") -> str:
    """Several names escaped with md() and joined by sep."""
    return sep.join(md(v) for v in values)
