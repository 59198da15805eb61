"""Safe Harbor identifier scan: column names and, in one DuckDB statement, values.

A finding records the column, the kind of identifier, where it was seen and how many rows
matched -- never the value itself, so findings are safe to log, to put in asset metadata and
in audit trails.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import duckdb

from clinical_mlops.core.warehouse import quote_identifier as _quote_ident
from clinical_mlops.ingestion import diabetes130

__all__ = [
    "IDENTIFIER_KINDS",
    "MIN_IDENTIFIER_LENGTH",
    "NAME_STOPWORDS_PATTERN",
    "VALUE_PATTERNS",
    "IdentifierFinding",
    "scan_column_names",
    "scan_table_values",
]


@dataclass(frozen=True)
class IdentifierFinding:
    """One suspected identifier: which column, which kind, where, how many rows.

    Deliberately has no field for the matching value, so a finding can be logged or stored
    in metadata without leaking what it found.
    """

    column: str
    identifier: str
    """Kind of identifier, one of :data:`IDENTIFIER_KINDS`."""
    location: str
    """``"column_name"`` (the name suggests an identifier) or ``"values"``."""
    matches: int
    """Number of rows whose value matched (0 for ``column_name`` findings)."""


IDENTIFIER_KINDS: dict[str, str] = {
    "name": "names (Safe Harbor A)",
    "address": "geographic subdivisions smaller than a state: street, city, county, ZIP, geocodes (B)",
    "zip5": "a 5-digit ZIP or ZIP+4 code as a value (B)",
    "full_date": "date elements (except year) directly related to an individual (C)",
    "phone": "telephone numbers (D)",
    "fax": "fax numbers (E)",
    "email": "e-mail addresses (F)",
    "ssn": "social security numbers (G)",
    "mrn": "medical record numbers (H)",
    "health_plan_id": "health plan beneficiary numbers (I)",
    "account": "account numbers (J)",
    "license": "certificate / licence numbers (K)",
    "vehicle": "vehicle identifiers, serial numbers, licence plates (L)",
    "device_id": "device identifiers and serial numbers (M)",
    "url": "web URLs (N)",
    "ip_address": "IP addresses (O)",
    "biometric": "biometric identifiers, finger and voice prints (P)",
    "photo": "full-face photographs and comparable images (Q)",
    "other_id": "any other unique identifying number, characteristic or code (R)",
}
"""Identifier kinds reported in :attr:`IdentifierFinding.identifier`, with their Safe Harbor item."""


# --------------------------------------------------------------------------------------
# Column-name scan
# --------------------------------------------------------------------------------------

# Keys are compared with every contiguous run of 1-4 name tokens joined without separator,
# so "first_name", "FirstName", "first-name" and "firstname" all produce "firstname".
_NAME_TERMS: dict[str, str] = {}


def _terms(identifier: str, *words: str) -> None:
    for word in words:
        _NAME_TERMS[word] = identifier


_terms(
    "name", "name", "names", "firstname", "lastname", "surname", "forename", "fullname",
    "givenname", "familyname", "middlename", "maidenname", "nickname", "fname", "lname",
    "username",
)
_terms("ssn", "ssn", "socialsecurity", "socialsecuritynumber", "socialsecurityno")
_terms(
    "phone", "phone", "phones", "telephone", "tel", "phonenumber", "mobile", "cellphone",
    "cellnumber", "mobilenumber",
)
_terms("fax", "fax", "faxnumber", "facsimile")
_terms("email", "email", "emails", "mail", "emailaddress", "emailaddr")
_terms(
    "address", "address", "addresses", "addr", "street", "streetaddress", "city", "town",
    "county", "zip", "zipcode", "zip5", "zip4", "postcode", "postal", "postalcode",
    "latitude", "longitude", "geocode", "geolocation", "gps",
)
_terms(
    "full_date", "date", "dates", "dob", "dod", "birthdate", "birthday", "dateofbirth",
    "dateofdeath", "deathdate", "birth", "datetime", "timestamp", "dt", "day", "month",
)
_terms(
    "mrn", "mrn", "medicalrecord", "medicalrecords", "medicalrecordnumber",
    "medicalrecordno", "chartnumber", "chartno", "hospitalnumber", "mrnumber",
)
_terms(
    "health_plan_id", "beneficiary", "beneficiaryid", "memberid", "membernumber",
    "subscriberid", "subscribernumber", "policynumber", "policyno", "policyid",
    "insuranceid", "insurancenumber", "healthplanid", "healthplannumber", "medicaidid",
    "medicaidnumber", "medicareid", "medicarenumber", "hicn", "mbi",
)
_terms("account", "account", "accounts", "acct", "accountnumber", "accountno", "iban")
_terms(
    "license", "license", "licence", "licenses", "licences", "licensenumber",
    "licencenumber", "certificate", "certificatenumber", "driverslicense", "driverlicense",
)
_terms("vehicle", "vehicle", "vehicles", "vin", "licenseplate", "licenceplate", "numberplate")
_terms(
    "device_id", "deviceid", "devicenumber", "deviceserial", "serial", "serialnumber",
    "serialno", "imei", "udi", "macaddress",
)
_terms("url", "url", "urls", "uri", "website", "webpage", "homepage", "weblink")
_terms("ip_address", "ip", "ipaddress", "ipaddr", "ipv4", "ipv6")
_terms(
    "biometric", "biometric", "biometrics", "fingerprint", "fingerprints", "voiceprint",
    "faceprint", "palmprint", "retina", "retinal", "iris", "irisscan",
)
_terms(
    "photo", "photo", "photos", "photograph", "picture", "headshot", "portrait", "selfie",
    "facephoto", "faceimage",
)
_terms(
    "other_id", "passport", "passportnumber", "nationalid", "taxid", "nhsnumber",
    "personnummer",
)

# "fingerprint" next to one of these is a hash/key fingerprint, not a biometric.
_NON_BIOMETRIC_CONTEXT = frozenset({"key", "hash", "sha", "sha256", "md5", "file", "data", "model", "schema"})

_CAMEL_1 = re.compile(r"([a-z0-9])([A-Z])")
_CAMEL_2 = re.compile(r"([A-Z]+)([A-Z][a-z])")
_SPLIT = re.compile(r"[^0-9A-Za-z]+")


def _name_tokens(column: str) -> list[str]:
    text = _CAMEL_2.sub(r"\1_\2", _CAMEL_1.sub(r"\1_\2", column))
    return [tok.lower() for tok in _SPLIT.split(text) if tok]


def _column_name_identifier(column: str) -> str | None:
    tokens = _name_tokens(column)
    hits: list[str] = []
    for width in (4, 3, 2, 1):  # longest phrase first: "date_of_birth" before "date"
        for start in range(len(tokens) - width + 1):
            kind = _NAME_TERMS.get("".join(tokens[start : start + width]))
            if kind == "biometric" and _NON_BIOMETRIC_CONTEXT.intersection(tokens):
                continue
            if kind is not None:
                hits.append(kind)
        if hits:
            return hits[0]
    return None


def scan_column_names(columns: Iterable[str]) -> list[IdentifierFinding]:
    """Flag columns whose name suggests a Safe Harbor identifier.

    Names are split into tokens (``_``, ``-``, spaces, camelCase) and every run of up to
    four tokens is compared with a term list (``first_name``, ``ssn``, ``phone``, ``email``,
    ``street``/``city``/``zip``, ``dob``/any ``*_date``, ``mrn``, ``account``, ``licence``,
    ``vin``, ``serial``, ``url``, ``ip``, ``photo`` ...).  The 50 Diabetes 130 columns are
    not flagged: ``encounter_id``, ``patient_nbr``, ``payer_code``, ``*_id`` codes and
    ``diag_*`` are the release's de-identified codes, and ``time_in_hospital`` is a count.
    Returns one finding per flagged column (``location="column_name"``, ``matches=0``),
    in input order.
    """
    findings = []
    for column in columns:
        kind = _column_name_identifier(str(column))
        if kind is not None:
            findings.append(IdentifierFinding(str(column), kind, "column_name", 0))
    return findings


# --------------------------------------------------------------------------------------
# Value scan
# --------------------------------------------------------------------------------------

_MONTH = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?"
_MM = r"(0?[1-9]|1[0-2])"
_DD = r"(0?[1-9]|[12][0-9]|3[01])"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_WORD = r"([A-Z]')?[A-Z][a-z]+(['-]?[A-Z][a-z]+)*"  # Smith, O'Neil, McDonald, Lopez-Garcia

_NAME_STOPWORDS = (
    "Not", "No", "None", "Null", "Unknown", "Invalid", "Available", "Applicable", "Mapped",
    "Missing", "Other", "Normal", "Emergency", "Urgent", "Elective", "Trauma", "Center",
    "Centre", "Room", "Referral", "Physician", "Clinic", "Hospital", "Hospice", "Transfer",
    "Delivery", "Premature", "Sick", "Baby", "Birth", "Extramural", "Newborn", "Home",
    "Health", "Care", "Unit", "Department", "Service", "Services", "Facility", "Medicine",
    "Medical", "Surgery", "General", "Internal", "Family", "Practice", "Agency", "Nursing",
    "Court", "Law", "Enforcement", "Discharged", "Expired", "Left", "Inpatient",
    "Outpatient", "Patient", "Test", "Sample", "Total", "Average",
)
NAME_STOPWORDS_PATTERN = r"\b(" + "|".join(_NAME_STOPWORDS) + r")\b"
"""Capitalised words of clinical/administrative phrases ("Trauma Center", "Not Available",
"Physician Referral"): a two-word value containing one is not reported as a name."""

VALUE_PATTERNS: dict[str, str] = {
    # RE2 syntax, as used by DuckDB's regexp_matches (partial match unless anchored).
    "ssn": r"(^|[^0-9-])[0-9]{3}-[0-9]{2}-[0-9]{4}($|[^0-9-])",
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "phone": r"(^|[^0-9])(\+?1[-. ]?)?(\([0-9]{3}\)\s?|[0-9]{3}[-. ])[0-9]{3}[-. ][0-9]{4}($|[^0-9])",
    "full_date": (
        rf"(^|[^0-9])[0-9]{{4}}[-/.]{_MM}[-/.]{_DD}($|[^0-9])"  # 2008-03-14, 2008/3/14
        rf"|(^|[^0-9]){_DD}[-/.]{_DD}[-/.][0-9]{{4}}($|[^0-9])"  # 03/14/2008, 14.03.2008
        rf"|(^|[^0-9]){_MM}/{_DD}/[0-9]{{2}}($|[^0-9/])"  # 3/14/08
        rf"|\b{_MONTH}\s+[0-9]{{1,2}}(st|nd|rd|th)?,?\s+[0-9]{{4}}\b"  # March 14, 2008
        rf"|\b[0-9]{{1,2}}(st|nd|rd|th)?\s+{_MONTH}\s+[0-9]{{4}}\b"  # 14 March 2008
    ),
    # Whole value "02115" / "02115-1234", or a ZIP after a state code in free text.
    "zip5": r"^\s*[0-9]{5}(-[0-9]{4})?\s*$|\b[A-Z]{2},?\s+[0-9]{5}(-[0-9]{4})?\b",
    "url": r"(?i)\b(https?|ftp)://[^\s]+|\bwww\.[a-z0-9-]+\.[a-z]{2,}",
    "ip_address": rf"(^|[^0-9.]){_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}($|[^0-9.])",
    "mrn": r"(?i)\b(mrn|medical\s+record(\s+(number|no))?)\s*[:#]?\s*[A-Z0-9-]*[0-9]{3,}",
    "address": (
        r"(?i)\b[0-9]{1,6}\s+([A-Z][a-z]+\s+){1,3}(Street|St|Avenue|Ave|Road|Rd|Boulevard"
        r"|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Terrace|Way|Highway|Hwy)\b\.?"
    ),
    # "Firstname Lastname", "Firstname M. Lastname", "Anna Maria Lopez-Garcia",
    # "Lastname, Firstname" as a whole value (see also _NAME_STOPWORDS).
    "name": (
        rf"^\s*{_WORD}(\s+[A-Z]\.?)?(\s+{_WORD}){{1,2}}\s*$"
        rf"|^\s*{_WORD},\s*{_WORD}(\s+[A-Z]\.?)?\s*$"
    ),
}
"""Value patterns per identifier kind (RE2, as DuckDB evaluates them)."""

MIN_IDENTIFIER_LENGTH = 5
"""No pattern of :data:`VALUE_PATTERNS` matches a value shorter than this ("Al Bo",
"02115"); shorter values ("?", "No", "250", ">30") are dropped before any regex runs."""

_SKIPPED_TYPES = ("BLOB", "BIT")
_SIMPLE_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*){0,2}")


def _quote_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _table_sql(table: str) -> str:
    """Quote a plain (optionally schema-qualified) table name; pass anything else through.

    Anything else (an already quoted name, ``read_csv('...')``, a subquery in parentheses)
    is trusted SQL from the caller.
    """
    if _SIMPLE_TABLE.fullmatch(table):
        return ".".join(_quote_ident(part) for part in table.split("."))
    return table


def scan_table_values(
    con: duckdb.DuckDBPyConnection,
    table: str,
    *,
    columns: Sequence[str],
    where: str | None = None,
    exempt_columns: Iterable[str] = (),
    vocabularies: Mapping[str, Iterable[str]] | None = None,
) -> list[IdentifierFinding]:
    """Count, per column and identifier kind, the rows whose value looks like an identifier.

    Runs as one DuckDB statement that reads each scanned column once: values shorter than
    :data:`MIN_IDENTIFIER_LENGTH` are dropped, the rest are grouped into distinct
    ``(column, value, rows)`` triples, and ``sum(rows) FILTER (WHERE regexp_matches(value,
    pattern))`` is taken per column x pattern of :data:`VALUE_PATTERNS`.  The result equals
    ``count(*) FILTER (WHERE regexp_matches(col, pattern))`` per column x pattern over the
    table, but each regex runs once per distinct candidate value instead of once per row
    (on the 101,766-row release: ~0.3 s instead of ~15 s for the per-row form).  Nothing
    is loaded into Python.

    Every column is scanned as VARCHAR: numbers are cast (a 5-digit integer column reads as
    ZIP-like), DATE / TIMESTAMP columns cast to ``YYYY-MM-DD...`` and so count as
    ``full_date`` for every non-null row; BLOB columns are skipped.

    ``table`` is a DuckDB table or view name (plain names are quoted; anything else is used
    as trusted SQL -- a table function such as ``read_csv(...)`` works but is re-read once
    per column, so load files into a table first).  ``where`` is a trusted SQL predicate
    restricting the rows (e.g. one partition).  ``exempt_columns`` are declared
    identifier/code columns left out of the scan (for the release: ``encounter_id`` and
    ``patient_nbr``).  The ``name`` pattern ("Firstname Lastname") applies to every column, but in columns with a known vocabulary
    (``vocabularies``, default :data:`diabetes130.CATEGORICAL_VOCABULARIES`) a value of
    that vocabulary never counts as a name.

    Returns findings with ``matches > 0`` only, ordered by column (input order) then kind
    (:data:`VALUE_PATTERNS` order); never values.  Raises ``ValueError`` for a column that
    is not in the table.
    """
    vocabularies = diabetes130.CATEGORICAL_VOCABULARIES if vocabularies is None else vocabularies
    exempt = set(exempt_columns)
    source = _table_sql(table)
    wanted = [c for c in dict.fromkeys(columns) if c not in exempt]
    if not wanted:
        return []

    described = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    types = {row[0]: str(row[1]).upper() for row in described}
    unknown = [c for c in wanted if c not in types]
    if unknown:
        raise ValueError(f"columns not in {table!r}: {', '.join(unknown)}")
    scanned = [c for c in wanted if not types[c].startswith(_SKIPPED_TYPES)]
    if not scanned:
        return []

    where_sql = f" WHERE ({where})" if where else ""
    branches = [
        f"SELECT {i} AS col, v AS val, count(*) AS n "
        f"FROM (SELECT CAST({_quote_ident(column)} AS VARCHAR) AS v FROM {source}{where_sql}) "
        f"WHERE length(v) >= {MIN_IDENTIFIER_LENGTH} GROUP BY v"
        for i, column in enumerate(scanned)
    ]
    known_pairs = [
        f"({i}, {_quote_str(str(value))})"
        for i, column in enumerate(scanned)
        for value in vocabularies.get(column, ())
        if len(str(value)) >= MIN_IDENTIFIER_LENGTH
    ]
    known_sql = (
        f"SELECT * FROM (VALUES {', '.join(known_pairs)}) AS k(col, val)"
        if known_pairs
        else "SELECT NULL::INTEGER AS col, NULL::VARCHAR AS val WHERE false"
    )
    aggregates = []
    for kind, pattern in VALUE_PATTERNS.items():
        condition = f"regexp_matches(d.val, {_quote_str(pattern)})"
        if kind == "name":
            condition += (
                f" AND NOT regexp_matches(d.val, {_quote_str(NAME_STOPWORDS_PATTERN)})"
                " AND k.col IS NULL"
            )
        aggregates.append(f"coalesce(sum(d.n) FILTER (WHERE {condition}), 0)")
    sql = (
        f"WITH d AS ({' UNION ALL '.join(branches)}), k AS ({known_sql}) "
        f"SELECT d.col, {', '.join(aggregates)} "
        f"FROM d LEFT JOIN k ON d.col = k.col AND d.val = k.val "
        f"GROUP BY d.col ORDER BY d.col"
    )
    findings = []
    for row in con.execute(sql).fetchall():
        column = scanned[int(row[0])]
        for kind, count in zip(VALUE_PATTERNS, row[1:], strict=True):
            if count:
                findings.append(IdentifierFinding(column, kind, "values", int(count)))
    return findings
