"""What every report shares: the canonical JSON that hashes are taken over, one number format, one page renderer.

Model cards, fairness, drift and change-control reports, audit bundles and the governance
document are written as Markdown and rendered to a standalone HTML page here, by
markdown-it-py (CommonMark plus tables); raw HTML in the Markdown is escaped, not passed on.
"""

from __future__ import annotations

import html
import json
import math
from functools import lru_cache
from typing import Any

__all__ = ["PAGE_STYLE", "canonical_json", "format_number", "markdown_to_html", "page"]

PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}"
    "table{border-collapse:collapse;margin:0.5rem 0 1rem}td,th{border:1px solid #ccc;padding:0.25rem 0.5rem;"
    "text-align:left;vertical-align:top}th{background:#f3f3f3}code{background:#f6f6f6;padding:0 0.2rem}"
    "blockquote{border-left:4px solid #ccc;margin:0.5rem 0;padding:0.25rem 1rem;color:#555}"
)


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


def markdown_to_html(markdown: str) -> str:
    """The HTML body for ``markdown`` (CommonMark and tables; raw HTML escaped)."""
    return _markdown().render(markdown)


def page(markdown: str, title: str, *, extra_html: str = "") -> str:
    """A standalone HTML page: ``markdown`` rendered, then ``extra_html`` (figures the caller built) appended."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{PAGE_STYLE}</style></head><body>\n"
        + markdown_to_html(markdown)
        + extra_html
        + "\n</body></html>\n"
    )
