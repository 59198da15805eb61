"""Draft a source contract from a sample file, for a person to review (``source init``).

:func:`draft_contract` reads the whole sample as text in DuckDB and infers, per column, a type,
missing tokens, a vocabulary (up to ``max_vocabulary`` values) or a numeric range, and roles
for id-like columns. It runs the identifier scan (:mod:`clinical_mlops.ingestion.deid`) on the
sample: a declared id flagged only by its shape (``zip5``) gets an exemption to review; any
other finding leaves the column out of the draft. No value that looks like an identifier is
ever written into the draft, its comments or its summary: findings carry counts, never values.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import yaml

from clinical_mlops.ingestion import deid
from clinical_mlops.sources.contract import ContractError, Roles, SourceContract, parse_contract

__all__ = ["DELIMITERS", "MISSING_CANDIDATES", "Draft", "DraftError", "Excluded", "draft_contract"]

DELIMITERS: tuple[str, ...] = (",", ";", "\t", "|")
"""The delimiters sniffed, in order of preference on a tie."""

MISSING_CANDIDATES: tuple[str, ...] = ("?", "NA", "N/A", "NULL", "null", "")
"""Values that may mean "missing". ``None`` is not one: Diabetes 130 writes it for "not measured"."""

NOT_MEASURED = "None"
SHAPE_KINDS = frozenset({"zip5"})
"""Identifier kinds a declared numeric id matches by shape alone (5- to 9-digit codes)."""

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_ID_NAME = re.compile(r"(?i)(_id|_nbr|_num|id|number|_no)$|number")
_OUTCOME_NAME = re.compile(r"(?i)readmit|outcome|death|dead|died|mortality|deceased|surviv")
_CODE_NAME = re.compile(r"(?i)(_id|_code|_type|_cd)$")
_INT = r"-?(0|[1-9][0-9]{0,17})"
_NUMBER = r"-?[0-9]+(\.[0-9]+)?"  # the shape derive's number rule accepts
_NEVER_NULL = "\x01\x02"  # an impossible null string: empty fields stay empty strings


class DraftError(ValueError):
    """A sample or name that cannot be drafted; ``str()`` is one line: ``<file>: <problem>``."""

    def __init__(self, file: str, problem: str) -> None:
        self.file, self.problem = file, problem
        super().__init__(f"{file}: {problem}")


@dataclass(frozen=True)
class Excluded:
    """A column left out of the draft as a likely direct identifier: kinds and row counts, no value."""

    column: str
    findings: tuple[tuple[str, str, int], ...]
    """``(kind, where, rows)``: where is ``column_name``, ``values`` or ``vocabulary``."""

    def describe(self) -> str:
        return "; ".join(f"{kind} ({'column name' if where == 'column_name' else f'{rows:,} rows, {where}'})"
                         for kind, where, rows in self.findings)


@dataclass
class _Profile:
    name: str
    rows: int
    counts: dict[str, int]  # value -> rows, only when the vocabulary is small enough
    distinct: int
    missing: dict[str, int] = field(default_factory=dict)
    kind: str = "string"
    low: str | None = None
    high: str | None = None
    comment: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Draft:
    """A drafted contract: its file text, the parsed contract, what was left out and the roles proposed."""

    yaml_text: str
    contract: SourceContract
    excluded: tuple[Excluded, ...]
    roles: Roles
    file: str
    rows: int
    exemptions: tuple[str, ...] = ()

    def summary(self) -> str:
        """One screen for the terminal: columns by type, roles, exemptions, exclusions, what to review."""
        types: dict[str, int] = {}
        for spec in self.contract.columns.values():
            types[spec.type] = types.get(spec.type, 0) + 1
        roles = [f"{r}={getattr(self.roles, r)}" for r in ("encounter_id", "patient_id") if getattr(self.roles, r)]
        roles += [f"outcome={c}" for c in self.roles.outcomes]
        nullable = [n for n, s in self.contract.columns.items() if s.nullable]
        lines = [
            f"DRAFT contract {self.contract.name!r} from {self.file}: {self.rows:,} rows, "
            f"{len(self.contract.columns)} columns ({', '.join(f'{n} {t}' for t, n in sorted(types.items()))})",
            f"  missing tokens: {', '.join(map(repr, self.contract.missing_tokens)) or 'none'}"
            f" in {len(nullable)} nullable column(s)",
            f"  roles proposed: {', '.join(roles) or 'none (no id-like or outcome column)'}",
            f"  key: {', '.join(self.contract.key.columns) if self.contract.key else 'none (identical rows allowed)'}",
        ]
        if self.exemptions:
            lines.append(f"  identifier-scan exemptions to review: {', '.join(self.exemptions)}")
        if self.excluded:
            lines.append(f"  EXCLUDED {len(self.excluded)} column(s) that look like direct identifiers; "
                         "strip them from the export before landing:")
            lines += [f"    - {e.column}: {e.describe()}" for e in self.excluded]
        lines.append("  Review every field (TODO: provenance, licence, sensitive attributes) before landing.")
        return "\n".join(lines)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text, ensure_ascii=False)


def _sniff(path: Path, file: str) -> tuple[str, str]:
    """The delimiter (most frequent candidate in the header line) and the line endings seen."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DraftError(file, f"cannot be read ({error.strerror or error})") from None
    if not data.strip():
        raise DraftError(file, "is empty")
    text = data.removeprefix(b"\xef\xbb\xbf")
    try:
        header = text.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        raise DraftError(file, "the header is not UTF-8 text") from None
    unquoted = re.sub(r'"[^"]*"', "", header)
    delimiter = max(DELIMITERS, key=lambda d: (unquoted.count(d), -DELIMITERS.index(d)))
    crlf, lf, cr = data.count(b"\r\n"), data.count(b"\n"), data.count(b"\r")
    endings = "crlf" if crlf and crlf == lf == cr else "lf" if not cr else "cr" if not lf else "mixed"
    return delimiter, endings


def _load(con: duckdb.DuckDBPyConnection, path: Path, delimiter: str, file: str) -> list[str]:
    try:
        con.execute(
            f"CREATE TABLE sample AS SELECT * FROM read_csv({_literal(str(path))}, delim={_literal(delimiter)}, "
            f"header=true, all_varchar=true, quote='\"', escape='\"', nullstr={_literal(_NEVER_NULL)}, "
            "auto_detect=true, null_padding=false)")
    except duckdb.Error as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DraftError(file, f"cannot be read as a delimited text file ({first})") from None
    columns = [row[0] for row in con.execute("DESCRIBE sample").fetchall()]
    if con.execute("SELECT count(*) FROM sample").fetchone()[0] == 0:
        raise DraftError(file, "has a header but no rows")
    return columns


def _is_missing(token: str, others_numeric: bool) -> bool:
    """A candidate counts as missing when its shape differs from the column's other values."""
    return others_numeric or token in ("?", "", "N/A", "NULL", "null")


def _profile(con: duckdb.DuckDBPyConnection, column: str, rows: int, max_vocabulary: int) -> _Profile:
    c = _quote(column)
    candidates = ", ".join(_literal(t) for t in MISSING_CANDIDATES)
    distinct = con.execute(f"SELECT count(DISTINCT {c}) FROM sample WHERE {c} NOT IN ({candidates})").fetchone()[0]
    present = dict(con.execute(f"SELECT {c}, count(*) FROM sample WHERE {c} IN ({candidates}) GROUP BY ALL").fetchall())
    shape = con.execute(
        f"SELECT bool_and(regexp_full_match({c}, '{_INT}')), bool_and(regexp_full_match({c}, '{_NUMBER}')), "
        f"bool_and(lower({c}) IN ('true', 'false')), arg_min({c}, TRY_CAST({c} AS DOUBLE)), "
        f"arg_max({c}, TRY_CAST({c} AS DOUBLE)) FROM sample WHERE {c} NOT IN ({candidates})").fetchone()
    numeric = bool(distinct) and bool(shape[1])
    counts: dict[str, int] = {}
    if distinct <= max_vocabulary:
        counts = dict(con.execute(f"SELECT {c}, count(*) FROM sample WHERE {c} NOT IN ({candidates}) GROUP BY ALL"
                                  ).fetchall())
    profile = _Profile(column, rows, counts, distinct)
    for token, n in present.items():
        if distinct and _is_missing(token, numeric):
            profile.missing[token] = n
            continue
        # a real value of this column (e.g. "NA" among country codes): no numeric or boolean shape
        shape = (False, False, False, None, None)
        profile.distinct += 1
        profile.counts = {**profile.counts, token: n} if profile.distinct <= max_vocabulary else {}
    if "" in profile.missing:
        profile.comment.append("TODO: empty fields here; a landing that reads them as NULL fails not_nullable")
    if profile.distinct == 0:
        profile.kind, profile.missing = "string", {}
    elif shape[2]:
        profile.kind = "boolean"
    elif shape[0]:
        profile.kind, profile.low, profile.high = "integer", shape[3], shape[4]
    elif shape[1]:
        profile.kind, profile.low, profile.high = "number", shape[3], shape[4]
    elif profile.counts and len(profile.counts) <= max_vocabulary:
        profile.kind = "category"
    return profile


def _vocabulary_hits(con: duckdb.DuckDBPyConnection, values: dict[str, int]) -> dict[str, int]:
    """Identifier kind -> rows whose value (among ``values``, value -> rows) matches it; never the values."""
    if not values:
        return {}
    rows = ", ".join(f"({_literal(v)}, {n})" for v, n in values.items())
    tests = [f"sum(n) FILTER (WHERE regexp_matches(v, {_literal(p)})"
             + (f" AND NOT regexp_matches(v, {_literal(deid.NAME_STOPWORDS_PATTERN)})" if k == "name" else "") + ")"
             for k, p in deid.VALUE_PATTERNS.items()]
    sums = con.execute(f"SELECT {', '.join(tests)} FROM (VALUES {rows}) AS t(v, n)").fetchone()
    return {kind: int(total) for kind, total in zip(deid.VALUE_PATTERNS, sums, strict=True) if total}


def _id_like(p: _Profile) -> bool:
    return bool(_ID_NAME.search(p.name)) and p.kind == "integer" and not p.missing and not p.low.startswith("-")


def _propose_roles(profiles: list[_Profile], max_vocabulary: int) -> tuple[str | None, str | None, list[str]]:
    ids = [p for p in profiles if _id_like(p)]
    unique = [p for p in ids if p.distinct == p.rows]
    repeating = [p for p in ids if p.distinct < p.rows and p.distinct > max_vocabulary]
    encounter = unique[0].name if unique else None
    repeating.sort(key=lambda p: (not re.search(r"(?i)patient|person|subject|member", p.name), -p.distinct))
    patient = repeating[0].name if repeating else None
    outcomes = [p.name for p in profiles if _OUTCOME_NAME.search(p.name) and p.name not in (encounter, patient)]
    return encounter, patient, outcomes


def _column_yaml(p: _Profile, default_missing: list[str], max_vocabulary: int, id_role: bool) -> list[str]:
    out = [f"  {_q(p.name)}:"]
    notes = [f"{p.distinct:,} distinct value(s) in {p.rows:,} rows"]
    if p.missing:
        notes.append("missing written " + ", ".join(f"{t!r} in {n:,} rows" for t, n in p.missing.items()))
    out.insert(0, f"  # {'; '.join(notes + p.comment)}")
    out.append(f"    type: {p.kind}")
    if p.missing:
        out.append("    nullable: true")
        if sorted(p.missing) != sorted(default_missing):
            out.append(f"    missing_tokens: [{', '.join(_q(t) for t in p.missing)}]")
    if p.kind in ("integer", "number"):
        small = p.kind == "integer" and p.counts and (len(p.counts) <= 2 or _CODE_NAME.search(p.name))
        if id_role:
            positive = not p.low.startswith(("-", "0"))
            out += ["    pattern:", f"      name: {'positive' if positive else 'non_negative'}_integer",
                    f"      regex: {_q('[1-9][0-9]{0,17}' if positive else '0|[1-9][0-9]{0,17}')}",
                    "      description: a canonical integer id (no sign, no leading zero, no exponent)"]
        elif small:
            values = sorted(p.counts, key=int)
            out.append(f"    allowed_values: [{', '.join(values)}]   # integer codes seen in the sample")
        else:
            out.append(f"    range: {{min: {p.low}, max: {p.high}}}   # observed; widen to the plausible range")
    elif p.kind == "category":
        values = sorted(p.counts, key=lambda v: (-p.counts[v], v))
        if NOT_MEASURED in values and len(values) > 1:
            values.remove(NOT_MEASURED)
            out.append(f"    not_measured: {_q(NOT_MEASURED)}   # a value meaning \"not measured\", not missing")
        out.append(f"    allowed_values: [{', '.join(_q(v) for v in values)}]")
    elif p.kind == "string" and p.distinct:
        out[0] += f"; more than {max_vocabulary} values: no rule inferred, add a pattern if there is one"
    return out


def draft_contract(path: Path, name: str, *, max_vocabulary: int = 50) -> Draft:
    """Draft the contract of source ``name`` from the sample file at ``path`` (read whole, as text)."""
    path = Path(path)
    file = path.name
    if not _NAME.fullmatch(name):
        raise DraftError(f"{name}.yaml", f"{name!r} is not a snake_case source name ([a-z][a-z0-9_]*)")
    if max_vocabulary < 1:
        raise DraftError(file, f"max_vocabulary must be at least 1, got {max_vocabulary}")
    if not path.is_file():
        raise DraftError(str(path), "no such file")
    delimiter, endings = _sniff(path, file)
    con = duckdb.connect()
    try:
        columns = _load(con, path, delimiter, file)
        rows = con.execute("SELECT count(*) FROM sample").fetchone()[0]
        profiles = [_profile(con, c, rows, max_vocabulary) for c in columns]
        found: dict[str, list[tuple[str, str, int]]] = {}
        for f in deid.scan_column_names(columns):
            found.setdefault(f.column, []).append((f.identifier, f.location, f.matches))
        for f in deid.scan_table_values(con, "sample", columns=columns, vocabularies={}):
            found.setdefault(f.column, []).append((f.identifier, f.location, f.matches))
        for p in profiles:
            written = {**p.counts, **{v: 1 for v in (p.low, p.high) if v is not None and v not in p.counts}}
            for kind, n in _vocabulary_hits(con, written).items():
                if not any(k == kind for k, _, _ in found.get(p.name, [])):
                    found.setdefault(p.name, []).append((kind, "vocabulary", n))
    finally:
        con.close()
    encounter, patient, outcomes = _propose_roles(profiles, max_vocabulary)
    id_columns = {encounter, patient} - {None}
    excluded, exemptions = [], {}
    for p in profiles:
        kinds = found.get(p.name, [])
        if not kinds:
            continue
        shape_only = all(k in SHAPE_KINDS and where == "values" for k, where, _ in kinds)
        if p.name in id_columns and shape_only:
            exemptions[p.name] = sorted({k for k, _, _ in kinds})
        else:
            excluded.append(Excluded(p.name, tuple(kinds)))
    gone = {e.column for e in excluded}
    encounter = None if encounter in gone else encounter
    patient = None if patient in gone else patient
    outcomes = [o for o in outcomes if o not in gone]
    kept = [p for p in profiles if p.name not in gone]
    if not kept:
        raise DraftError(file, "every column looks like a direct identifier; nothing left to draft")
    missing = [t for t in MISSING_CANDIDATES if any(t in p.missing for p in kept)]
    text = _render(name, file, rows, delimiter, endings, missing, kept, max_vocabulary,
                   (encounter, patient, outcomes), exemptions, excluded)
    try:
        contract = parse_contract(yaml.safe_load(text), f"{name}.yaml")
    except ContractError as error:  # a bug of the drafter, not of the sample
        raise RuntimeError(f"the drafted contract does not parse: {error}") from None
    return Draft(text, contract, tuple(excluded), contract.roles, file, rows, tuple(exemptions))


def _render(name: str, file: str, rows: int, delimiter: str, endings: str, missing: list[str],
            kept: list[_Profile], max_vocabulary: int, roles: tuple, exemptions: dict[str, list[str]],
            excluded: list[Excluded]) -> str:
    encounter, patient, outcomes = roles
    today = _dt.date.today().isoformat()
    lines = [
        f"# DRAFT source contract, written by `clinical-mlops source init {name}` from {file} on {today}.",
        "# REVIEW EVERY FIELD before landing with it: types, vocabularies and ranges are only what this",
        "# sample showed, not what the source guarantees. Every string is quoted (YAML 1.1 reads NO, Yes",
        "# and No as booleans). Once reviewed, delete these DRAFT lines; the file's sha256 is the contract version.",
    ]
    if excluded:
        lines += ["#", "# EXCLUDED: columns that look like direct identifiers (kind and row count, never a value).",
                  "# They are not in `columns:`; strip them from the export before landing:"]
        lines += [f"#   - {e.column}: {e.describe()}" for e in excluded]
    lines += [
        f"name: {name}",
        f"description: {_q(f'Drafted from {file} on {today}; review every field')}",
        f"provenance: {_q('TODO: who produced the extract, from which system, and how it was de-identified')}",
        f"licence: {_q('TODO: the licence or data-use agreement under which the extract may be used')}",
        "format:",
        f"  delimiter: {_q(delimiter)}",
        "  quote: '\"'",
        "  encoding: utf-8",
        "  header: true",
        "  byte_order_mark: tolerated",
        f"  line_endings: [{endings}]   # as seen in the sample",
        f"missing_tokens: [{', '.join(_q(t) for t in missing)}]   # allowed only in a nullable column",
        "",
        "columns:",
    ]
    for p in kept:
        lines += _column_yaml(p, missing, max_vocabulary, p.name in (encounter, patient))
    lines += ["", "roles:"]
    if encounter:
        lines.append(f"  encounter_id: {_q(encounter)}   # unique per row in the sample")
    if patient:
        lines.append(f"  patient_id: {_q(patient)}   # an id-like column that repeats across rows")
    if outcomes:
        lines.append(f"  outcomes: [{', '.join(_q(o) for o in outcomes)}]   # proposed from the column name: confirm")
    if not (encounter or patient or outcomes):
        lines[-1] = "roles: {}   # TODO: no id-like or outcome column found; declare the roles you need"
    if encounter:
        lines += ["key:", f"  columns: [{_q(encounter)}]", "  scope: source",
                  f"  reason: {_q(f'one row per {encounter}; a repeated value is a duplicated or corrupted row')}"]
    else:
        lines.append("key: null   # no id-like column unique per row: identical rows are allowed")
    lines.append("")
    if exemptions:
        lines.append("identifier_scan_exemptions:")
        for column, kinds in exemptions.items():
            lines += [f"  - column: {_q(column)}", f"    kinds: [{', '.join(kinds)}]",
                      f"    reason: {_q('declared id; review: its numeric codes read as ' + ', '.join(kinds) + ' by shape alone')}"]
    else:
        lines.append("identifier_scan_exemptions: []")
    lines += ["", "sensitive_attributes: {}   # TODO: the attributes the fairness audit compares, with reference groups", ""]
    return "\n".join(lines)
