"""Loader for the real UCI Diabetes 130-US hospitals release (UCI id 296).

Accepts the release as distributed (``dataset_diabetes.zip`` holding
``dataset_diabetes/diabetic_data.csv`` and ``dataset_diabetes/IDs_mapping.csv``), a
directory holding the CSVs (directly or in a ``dataset_diabetes/`` subdirectory, as the
zip unpacks), or the encounter CSV itself.

Quirks handled (see the release README): CRLF line endings; ``?`` is the missing marker;
the literal ``None`` in ``max_glu_serum``/``A1Cresult`` means "not measured" and must stay
a string (``keep_default_na=False``); ``IDs_mapping.csv`` stacks three lookup tables in one
file separated by lines holding only ``,``, with leading spaces in some descriptions.

:func:`write_sequential_extracts` cuts the release into ordered CSV extracts to simulate
periodic (e.g. monthly) arrivals; ``encounter_id`` is the only stand-in for time.
"""

from __future__ import annotations

import csv
import io
import os
import re
import zipfile
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from clinical_mlops.ingestion import diabetes130

__all__ = [
    "ENCOUNTERS_FILE",
    "ID_MAPPING_TABLES",
    "ID_MAPPINGS_FILE",
    "UNKNOWN_DESCRIPTIONS",
    "UCISourceError",
    "UCISourceNotFoundError",
    "load_id_mappings",
    "load_uci_encounters",
    "write_sequential_extracts",
]

ENCOUNTERS_FILE = "diabetic_data.csv"
ID_MAPPINGS_FILE = "IDs_mapping.csv"
ID_MAPPING_TABLES: tuple[str, ...] = (
    "admission_type_id", "discharge_disposition_id", "admission_source_id",
)
UNKNOWN_DESCRIPTIONS: frozenset[str] = frozenset(
    {"NULL", "Not Mapped", "Not Available", "Unknown/Invalid"}
)
"""Descriptions in IDs_mapping.csv that mean "no information" (kept as text, flagged)."""

_RELEASE_SUBDIR = "dataset_diabetes"


class UCISourceError(ValueError):
    """The source is not a recognisable Diabetes 130 release, or its columns are wrong."""


class UCISourceNotFoundError(UCISourceError, FileNotFoundError):
    """The source path, or the expected file inside it, does not exist."""


# --------------------------------------------------------------------------------------
# Locating files
# --------------------------------------------------------------------------------------


def _zip_member(zf: zipfile.ZipFile, filename: str, source: Path) -> str:
    candidates = [
        name for name in zf.namelist()
        if not name.endswith("/") and name.rsplit("/", 1)[-1] == filename
        and not name.startswith("__MACOSX/")
    ]
    if not candidates:
        raise UCISourceNotFoundError(
            f"{source}: zip archive holds no {filename} (members: {', '.join(zf.namelist()[:10])})"
        )
    if len(candidates) > 1:
        raise UCISourceError(f"{source}: zip archive holds several {filename}: {candidates}")
    return candidates[0]


def _read_bytes(source: Path, filename: str, *, beside_csv: bool) -> bytes:
    """Bytes of ``filename`` from a zip, a directory, or (``beside_csv``) next to a CSV."""
    source = Path(source)
    if not source.exists():
        raise UCISourceNotFoundError(f"UCI source does not exist: {source}")
    if source.is_dir():
        for candidate in (source / filename, source / _RELEASE_SUBDIR / filename):
            if candidate.is_file():
                return candidate.read_bytes()
        raise UCISourceNotFoundError(
            f"{source}: directory holds no {filename} (nor {_RELEASE_SUBDIR}/{filename})"
        )
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            return zf.read(_zip_member(zf, filename, source))
    if source.suffix.lower() == ".csv":
        if source.name == filename:
            return source.read_bytes()
        if beside_csv:
            candidate = source.parent / filename
            if candidate.is_file():
                return candidate.read_bytes()
            raise UCISourceNotFoundError(f"no {filename} beside {source}")
        return source.read_bytes()
    raise UCISourceError(
        f"unrecognised UCI source {source}: expected dataset_diabetes.zip, a directory "
        f"holding {filename}, or the CSV file itself"
    )


# --------------------------------------------------------------------------------------
# Encounters
# --------------------------------------------------------------------------------------


def _read_encounter_csv(handle: IO[bytes]) -> pd.DataFrame:
    return pd.read_csv(
        handle,
        dtype=str,
        keep_default_na=False,  # "None" = not measured, "?" = missing: both stay strings
        na_filter=False,
        encoding="utf-8-sig",
        engine="c",
    )


def load_uci_encounters(source: Path) -> pd.DataFrame:
    """All 101,766 encounters x 50 columns of ``diabetic_data.csv``, every value a ``str``.

    ``source`` is the release zip, a directory holding ``diabetic_data.csv`` (directly or
    under ``dataset_diabetes/``), or a CSV file.  Values are exactly as in the file (no NA
    conversion: ``"?"`` and ``"None"`` stay strings), CRLF endings handled, columns in
    :data:`diabetes130.COLUMNS` order, fresh ``RangeIndex`` in file order.

    Raises :class:`UCISourceError` (a ``ValueError``) naming missing / unexpected columns
    or an unrecognised source, :class:`UCISourceNotFoundError` (also a
    ``FileNotFoundError``) when the path or the file inside it is absent.
    """
    data = _read_bytes(Path(source), ENCOUNTERS_FILE, beside_csv=False)
    try:
        frame = _read_encounter_csv(io.BytesIO(data))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UCISourceError(f"{source}: cannot parse the encounter CSV: {exc}") from exc

    header = [str(c) for c in frame.columns]
    expected = list(diabetes130.COLUMNS)
    missing = [c for c in expected if c not in header]
    unexpected = [c for c in header if c not in expected]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if missing or unexpected or duplicated:
        parts = []
        if missing:
            parts.append(f"missing columns: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected columns: {', '.join(unexpected)}")
        if duplicated:
            parts.append(f"duplicated columns: {', '.join(duplicated)}")
        raise UCISourceError(f"{source}: not the Diabetes 130 encounter format ({'; '.join(parts)})")
    return frame.loc[:, expected].reset_index(drop=True)


# --------------------------------------------------------------------------------------
# ID mappings
# --------------------------------------------------------------------------------------

_SEPARATOR = re.compile(r"^\s*,?\s*$")


def _parse_id_block(lines: list[str], source: Path) -> tuple[str, pd.DataFrame]:
    rows = list(csv.reader(lines))
    header = [cell.strip() for cell in rows[0]]
    if len(header) != 2 or header[1] != "description":
        raise UCISourceError(f"{source}: unexpected IDs_mapping header {rows[0]!r}")
    ids: list[int] = []
    descriptions: list[str] = []
    for row in rows[1:]:
        if len(row) != 2:
            raise UCISourceError(f"{source}: malformed IDs_mapping row {row!r} in {header[0]}")
        try:
            ids.append(int(row[0].strip()))
        except ValueError as exc:
            raise UCISourceError(f"{source}: non-integer id {row[0]!r} in {header[0]}") from exc
        descriptions.append(row[1].strip())
    table = pd.DataFrame(
        {
            "id": np.asarray(ids, dtype="int64"),
            "description": pd.Series(descriptions, dtype=object),
        }
    )
    table["is_unknown"] = table["description"].isin(UNKNOWN_DESCRIPTIONS).astype(bool)
    if table["id"].duplicated().any():
        raise UCISourceError(f"{source}: duplicated ids in {header[0]}")
    table = table.sort_values("id", kind="stable").reset_index(drop=True)
    return header[0], table


def load_id_mappings(source: Path) -> dict[str, pd.DataFrame]:
    """The three lookup tables of ``IDs_mapping.csv``.

    ``source`` is the release zip, a directory holding ``IDs_mapping.csv`` (directly or
    under ``dataset_diabetes/``), the encounter CSV (the mapping file is looked for beside
    it) or ``IDs_mapping.csv`` itself.  Returns ``{"admission_type_id": df, ...}`` for
    :data:`ID_MAPPING_TABLES`, each with columns ``id`` (int64), ``description`` (str,
    surrounding spaces stripped) and ``is_unknown`` (bool: ``NULL``, ``Not Mapped``,
    ``Not Available``, ``Unknown/Invalid`` -- kept as text), sorted by ``id``.

    Raises :class:`UCISourceNotFoundError` when the file is absent and
    :class:`UCISourceError` when it does not hold the three expected tables.
    """
    data = _read_bytes(Path(source), ID_MAPPINGS_FILE, beside_csv=True)
    text = data.decode("utf-8-sig")
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if _SEPARATOR.match(line):
            if blocks[-1]:
                blocks.append([])
        else:
            blocks[-1].append(line)
    tables = dict(_parse_id_block(block, Path(source)) for block in blocks if block)
    missing = [name for name in ID_MAPPING_TABLES if name not in tables]
    unexpected = [name for name in tables if name not in ID_MAPPING_TABLES]
    if missing or unexpected:
        raise UCISourceError(
            f"{source}: {ID_MAPPINGS_FILE} tables do not match; missing: {missing or 'none'}, "
            f"unexpected: {unexpected or 'none'}"
        )
    return {name: tables[name] for name in ID_MAPPING_TABLES}


# --------------------------------------------------------------------------------------
# Sequential extracts
# --------------------------------------------------------------------------------------


def write_sequential_extracts(
    encounters: pd.DataFrame, out_dir: Path, n_extracts: int, prefix: str = "extract"
) -> list[Path]:
    """Write ``encounters`` as ``n_extracts`` ordered CSV extracts, simulating arrivals.

    Rows are sorted by ``int(encounter_id)`` (stable, so ties keep input order) and cut
    into ``n_extracts`` contiguous chunks whose sizes differ by at most one (the first
    ``len % n`` chunks get the extra row).  Chunk ``i`` goes to
    ``out_dir / f"{prefix}_{i:03d}.csv"`` with a header, ``\\n`` line endings, no index,
    written atomically (temp file + rename); the bytes depend only on the input.  Files
    already in ``out_dir`` are never deleted (they may have been landed).  Returns the paths in order.
    """
    if isinstance(n_extracts, bool) or not isinstance(n_extracts, (int, np.integer)):
        raise TypeError(f"n_extracts must be an int, got {n_extracts!r}")
    n_extracts = int(n_extracts)
    if n_extracts < 1:
        raise ValueError(f"n_extracts must be at least 1, got {n_extracts}")
    if n_extracts > len(encounters):
        raise ValueError(f"cannot cut {len(encounters)} rows into {n_extracts} non-empty extracts")
    if n_extracts > 1000:
        raise ValueError("at most 1000 extracts (names use three digits)")
    if diabetes130.ENCOUNTER_ID not in encounters.columns:
        raise ValueError(f"encounters has no {diabetes130.ENCOUNTER_ID!r} column")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", prefix):
        raise ValueError(f"prefix must be a plain file-name stem, got {prefix!r}")

    try:
        order_key = encounters[diabetes130.ENCOUNTER_ID].astype("int64").to_numpy()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{diabetes130.ENCOUNTER_ID} must hold integers: {exc}") from exc
    ordered = encounters.iloc[np.argsort(order_key, kind="stable")].reset_index(drop=True)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base, extra = divmod(len(ordered), n_extracts)
    paths: list[Path] = []
    start = 0
    for i in range(n_extracts):
        stop = start + base + (1 if i < extra else 0)
        path = out_dir / f"{prefix}_{i:03d}.csv"
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            ordered.iloc[start:stop].to_csv(
                tmp, index=False, lineterminator="\n", encoding="utf-8"
            )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        paths.append(path)
        start = stop

    return paths
