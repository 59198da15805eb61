"""What every report shares: the canonical JSON that hashes are taken over, one number format, one page renderer.

Model cards, fairness, drift and change-control reports, audit bundles and the governance
document are written as Markdown and rendered to a standalone HTML page here, by
markdown-it-py (CommonMark plus tables); raw HTML in the Markdown is escaped, not passed on.
Figures are PNGs embedded in the Markdown as data URIs (:func:`png_markdown`); a page may colour
table rows by the value in one column (``page(..., row_classes=...)``, e.g. an evidence status with
:data:`EVIDENCE_STYLE`).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

__all__ = ["EVIDENCE_STYLE", "PAGE_STYLE", "canonical_json", "escape_markdown", "format_number", "markdown_to_html",
           "page", "png_markdown"]

PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}"
    "table{border-collapse:collapse;margin:0.5rem 0 1rem}td,th{border:1px solid #ccc;padding:0.25rem 0.5rem;"
    "text-align:left;vertical-align:top}th{background:#f3f3f3}code{background:#f6f6f6;padding:0 0.2rem}"
    "blockquote{border-left:4px solid #ccc;margin:0.5rem 0;padding:0.25rem 1rem;color:#555}"
)
EVIDENCE_STYLE = ".pass{background:#e3f4e1}.fail{background:#fbe0dd}.insufficient_evidence{background:#fff4d6}"
"""Row colours for the evidence statuses (:mod:`clinical_mlops.core.evidence`): ``page(..., style=EVIDENCE_STYLE)``."""

_MARKUP = re.compile(r"([\\`*_\[\]<>&|])")


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 characters kept, no NaN: one text per value, the text every hash is over.

    Hash the UTF-8 bytes (``canonical_json(v).encode()``). The offline bundle verifier keeps a
    standard-library copy of this rule on purpose: it must run with nothing installed.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def format_number(value: Any, digits: int = 3, *, sign: bool = False, thousands: bool = False,
                  missing: str = "—") -> str:
    """A number for people: fixed ``digits``, optional ``+`` sign and thousands separators; None/NaN → ``missing``.

    Integers (and integral floats when ``thousands``) print without decimals; non-numbers print as text.
    """
    if value is None:
        return missing
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and math.isnan(value):
        return missing
    grouping = "," if thousands else ""
    plus = "+" if sign else ""
    if isinstance(value, int) or (thousands and float(value).is_integer() and abs(value) >= 1000):
        return f"{int(value):{plus}{grouping}d}"
    return f"{value:{plus}{grouping}.{digits}f}"


@lru_cache(maxsize=1)
def _markdown():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table")


def escape_markdown(value: Any) -> str:
    """``str(value)`` as literal Markdown text (a table cell, a heading): markup characters backslash-escaped,
    newlines as spaces, so it renders as exactly that text."""
    return _MARKUP.sub(r"\\\1", str(value).replace("\r", " ").replace("\n", " "))


def png_markdown(png: bytes, alt: str) -> str:
    """A PNG as a Markdown image with a ``data:`` URI: the page (or Dagster's Markdown metadata) carries it."""
    return f"![{escape_markdown(alt)}](data:image/png;base64,{base64.b64encode(png).decode()})"


def markdown_to_html(markdown: str, *, row_classes: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """The HTML body for ``markdown`` (CommonMark and tables; raw HTML escaped).

    ``row_classes`` maps a table column's header to {cell text: CSS class}: a body row whose cell in a
    column of that header reads one of the texts gets that class (``<tr class="fail">``).
    """
    if not row_classes:
        return _markdown().render(markdown)
    md = _markdown()
    tokens = md.parse(markdown)
    _class_rows(tokens, row_classes)
    return md.renderer.render(tokens, md.options, {})


def _class_rows(tokens: list, row_classes: Mapping[str, Mapping[str, str]]) -> None:
    classed: dict[int, Mapping[str, str]] = {}  # column index → {text: class}, for the current table
    in_head, row, column = False, None, 0
    for i, token in enumerate(tokens):
        if token.type == "table_open":
            classed = {}
        elif token.type in ("thead_open", "tbody_open"):
            in_head = token.type == "thead_open"
        elif token.type == "tr_open":
            row, column = token, 0
        elif token.type in ("th_open", "td_open"):
            text = "".join(c.content for c in tokens[i + 1].children or () if c.type in ("text", "code_inline"))
            if in_head and text in row_classes:
                classed[column] = row_classes[text]
            elif not in_head and row is not None and text in classed.get(column, {}):
                row.attrSet("class", classed[column][text])
            column += 1


def page(markdown: str, title: str, *, extra_html: str = "", style: str = "",
         row_classes: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """A standalone HTML page: ``markdown`` rendered, then ``extra_html`` (figures the caller built) appended.

    ``style`` is CSS added after :data:`PAGE_STYLE`; ``row_classes`` as in :func:`markdown_to_html`.
    """
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{PAGE_STYLE}{style}</style></head><body>\n"
        + markdown_to_html(markdown, row_classes=row_classes)
        + extra_html
        + "\n</body></html>\n"
    )
