"""Which source a file belongs to, from its header: for ``land FILE`` and ``demo --source FILE``
without a source name.

A contract matches when the file's header is exactly its columns, in order. Several contracts may
share a format (``diabetes130`` and ``synthetic_diabetes130``); then the one that declares this
file among its known extracts (by name or sha256) wins, and otherwise the user must name one. No
match is an error that lists every contract tried and how the header differed from each.
"""

from __future__ import annotations

from collections.abc import Mapping

from clinical_mlops.sources.contract import LoadedSource

__all__ = ["SourceMatchError", "header_differences", "match_header"]


class SourceMatchError(ValueError):
    """No single contract matches the file; the message says which were tried and why each failed."""


def _few(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def header_differences(header: list[str], source: LoadedSource) -> str | None:
    """How ``header`` differs from the contract's columns (``None`` when it is exactly them, in order).

    Only the contract's own column names are quoted: a header column the contract lacks is counted,
    never echoed (a file without its header line would otherwise leak its first row).
    """
    expected = list(source.contract.columns)
    if header == expected:
        return None
    missing = [c for c in expected if c not in header]
    unexpected = sum(1 for c in header if c not in expected)
    parts = []
    if missing:
        parts.append(f"{len(missing)} of its {len(expected)} columns missing ({_few(missing)})")
    if unexpected:
        parts.append(f"{unexpected} column(s) it does not declare")
    if not parts:
        parts.append("the same columns in another order" if len(header) == len(expected) else "a repeated column")
    return "; ".join(parts)


def match_header(header: list[str], sources: Mapping[str, LoadedSource], *, file_name: str = "",
                 sha256: str = "") -> LoadedSource:
    """The one source whose contract the header matches (see the module docstring for ties)."""
    matching = [s for s in sources.values() if header_differences(header, s) is None]
    if len(matching) == 1:
        return matching[0]
    if matching:
        declared = [s for s in matching if any(e.file == file_name or (sha256 and e.sha256 == sha256)
                                               for e in s.contract.extracts)]
        if len(declared) == 1:
            return declared[0]
        raise SourceMatchError(f"the header matches {len(matching)} contracts "
                               f"({', '.join(s.name for s in matching)}); name one with --source-name")
    tried = "; ".join(f"{s.name}: {header_differences(header, s)}" for s in sources.values())
    raise SourceMatchError(f"the header matches no source contract (tried {tried}); draft one with "
                           "`clinical-mlops source init NAME --from FILE`")
