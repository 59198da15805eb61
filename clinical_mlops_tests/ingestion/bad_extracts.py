"""A corpus of broken extracts, built in memory from a small valid synthetic extract.

Nothing here is a data file: every case is a function from the clean extract (40 synthetic
encounters, all text, :mod:`clinical_mlops.ingestion.synthetic`) to the bytes of a broken file, with
the outcome the pipeline must produce. ``test_bad_extract_corpus.py`` runs every case through
``landing.land_extract`` and ``validation.validate_extract`` (and a few through the Dagster
ingestion job via ``clinical-mlops land``).

Outcomes:

* ``refused`` -- :class:`~clinical_mlops.ingestion.landing.ExtractFormatError` whose message matches
  ``expect`` and quotes no value of the file; nothing lands, the warehouse is unchanged.
* ``rejected`` -- the de-identification gate: status ``rejected`` with a finding ``expect``
  (``column:kind``), no row in ``raw.synthetic_diabetes130``/``staging.*``; the only change to the
  warehouse is the extract's ``raw.extracts`` row recording the rejection (no value in it).
* ``quarantined`` -- lands; validation quarantines ``quarantined`` rows, with ``expect``
  (``column:check``) among the reasons; landed = valid + quarantined.
* ``landed`` -- a tolerated variant of the format: every row lands and validates, with
  exactly the clean extract's values.

Row 3 of the clean extract is line 5 of the file (the header is line 1).

=============================  ===========  ======================================================
case                           outcome      how it is handled
=============================  ===========  ======================================================
missing_column                 refused      "missing column(s): num_medications"
extra_column                   refused      "unexpected column(s): ward_code"
renamed_column                 refused      missing A1Cresult, unexpected a1c_result
duplicated_column              refused      "duplicated column(s): race" (and gender missing)
columns_swapped                refused      "columns are in a different order" (read by position)
header_case_and_spaces         refused      names 'Encounter_ID ' as differing only in case/spaces
missing_header_row             refused      "is the header row missing?" -- the first row is
                                            never echoed (was: every value listed as a column)
semicolon_delimiter            refused      "single column: is the delimiter a comma?"
tab_delimiter                  refused      same
empty_file                     refused      "the file is empty"
header_only                    refused      "holds a header but no rows"
latin1_bytes                   refused      "not valid UTF-8 at line 5"
utf16_encoding                 refused      "the file is UTF-16 encoded"
unterminated_quote             refused      "unterminated quote at line 5" (was: any error
                                            was called a quote problem)
too_many_fields                refused      "malformed row at line 5: expected 50 fields, found 51"
ten_mb_field                   refused      "line 5 is longer than the maximum line size"
utf8_bom                       landed       BOM stripped from the header
crlf_line_endings              landed       CRLF read as line ends, no trailing CR in values
mixed_line_endings             landed       CRLF and LF in one file (was: refused as a quote
                                            problem); re-read from an LF-only temporary copy
cr_only_line_endings           landed       old Mac CR endings (was: a csv traceback)
blank_lines                    landed       empty lines are not rows
all_fields_quoted              landed       every field in double quotes
quoted_newline_in_field        quarantined  40 rows, not 41 (was: refused); medical_specialty:in_vocabulary
nul_byte                       quarantined  medical_specialty:in_vocabulary
text_in_count                  quarantined  num_medications:integer_in_1_120
negative_count                 quarantined  num_procedures:integer_in_0_10
decimal_count                  quarantined  number_diagnoses:integer_in_1_20
out_of_range_count             quarantined  time_in_hospital:integer_in_1_14
whitespace_padded_count        quarantined  num_lab_procedures:integer_in_1_200
out_of_vocabulary_code         quarantined  admission_type_id:in_vocabulary
lowercase_category             quarantined  race:in_vocabulary
whitespace_padded_category     quarantined  gender:in_vocabulary
missing_marker_not_allowed     quarantined  age:in_vocabulary ("?" only where the format allows it)
unexpected_label               quarantined  readmitted:in_vocabulary
empty_label                    quarantined  readmitted:not_nullable
empty_column                   quarantined  all 40 rows, race:not_nullable
bad_icd9_code                  quarantined  diag_1:icd9_code
non_numeric_patient_id         quarantined  patient_nbr:positive_integer
scientific_notation_id         quarantined  encounter_id:positive_integer (a spreadsheet's "1.3E+5")
duplicated_rows                quarantined  both copies, encounter_id:duplicate_encounter_id
duplicated_encounter_ids       quarantined  both rows, encounter_id:duplicate_encounter_id
truncated_last_line            quarantined  padded with NULLs, readmitted:not_nullable
short_row                      quarantined  a short row mid-file, padded, readmitted:not_nullable
repeated_header_row            quarantined  concatenated exports: 41 rows, encounter_id:positive_integer
zero_padded_encounter_id       quarantined  encounter_id:positive_integer (canonical ids only: "012345"
                                            would pass uniqueness beside "12345" as text)
zero_padded_patient_id         quarantined  patient_nbr:positive_integer ("029888" and "29888" would get
                                            different patient_keys and straddle the split)
name_in_values                 rejected     medical_specialty:name
ssn_in_values                  rejected     payer_code:ssn
phone_in_values                rejected     weight:phone
email_in_values                rejected     medical_specialty:email
full_date_in_values            rejected     weight:full_date
zip_in_values                  rejected     weight:zip5
identifier_column_name         rejected     patient_name:name (column name)
ssn_in_patient_id              rejected     patient_nbr:ssn (was: landed in raw, then quarantined;
                                            the id columns were exempt from the whole scan)
email_in_encounter_id          rejected     encounter_id:email (same)
=============================  ===========  ======================================================
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import pandas as pd

from clinical_mlops.ingestion import diabetes130, synthetic

REFUSED, REJECTED, QUARANTINED, LANDED = "refused", "rejected", "quarantined", "landed"
OUTCOMES = (REFUSED, REJECTED, QUARANTINED, LANDED)

ROWS = 40
BROKEN_ROW = 3
"""The row most cases break; it is line 5 of the file."""

# Distinctive fake identifiers, so a leak is found by plain substring search.
PLANTED_NAME = "Zebediah Quenby"
PLANTED_SSN = "512-88-4407"
PLANTED_PHONE = "(555) 867-5309"
PLANTED_EMAIL = "zebediah.quenby@example.org"
PLANTED_DATE = "1961-07-23"
PLANTED_ZIP = "48109"
PLANTED_TEXT = "LEAKCANARY"
"""A marker put in fields that must never reach a message."""


@dataclass(frozen=True)
class BadExtract:
    """One kind of broken extract and what the pipeline must do with it."""

    name: str
    outcome: str
    expect: str
    """refused: regex on the message; rejected: ``column:kind``; quarantined: ``column:check``."""
    build: Callable[[pd.DataFrame], bytes]
    rows_landed: int = ROWS
    quarantined: int = 1
    planted: tuple[str, ...] = ()
    """Values put in the file that must appear in no message, finding or reason."""
    xfail: str | None = None
    """Why the pipeline does not yet do this (a change outside this corpus' reach), if so."""

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}")

    def file_bytes(self) -> bytes:
        return self.build(clean_extract())


@lru_cache(maxsize=1)
def _encounters() -> pd.DataFrame:
    return synthetic.generate_encounters(synthetic.SyntheticConfig(n_encounters=2 * ROWS, seed=11))


def clean_extract() -> pd.DataFrame:
    """The valid extract every case starts from (a copy: cases may change it)."""
    return _encounters().iloc[ROWS:].reset_index(drop=True).copy()


def previous_extract() -> pd.DataFrame:
    """A valid extract with other encounters, landed before each case."""
    return _encounters().iloc[:ROWS].reset_index(drop=True).copy()


def to_csv_bytes(frame: pd.DataFrame, **options) -> bytes:
    """The frame as the extract format writes it: comma, LF, minimal quoting, UTF-8."""
    return frame.to_csv(index=False, lineterminator="\n", **options).encode("utf-8")


def _lines(frame: pd.DataFrame) -> list[str]:
    return to_csv_bytes(frame).decode().rstrip("\n").split("\n")


def _value(column: str, value: str, row: int = BROKEN_ROW) -> Callable[[pd.DataFrame], bytes]:
    def build(frame: pd.DataFrame) -> bytes:
        frame.loc[row, column] = value
        return to_csv_bytes(frame)

    return build


def _frame(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[pd.DataFrame], bytes]:
    return lambda frame: to_csv_bytes(change(frame))


def _swap_columns(frame: pd.DataFrame) -> pd.DataFrame:
    order = list(frame.columns)
    i, j = order.index("race"), order.index("gender")
    order[i], order[j] = order[j], order[i]
    return frame[order]


def _latin1(frame: pd.DataFrame) -> bytes:
    frame.loc[BROKEN_ROW, "medical_specialty"] = "Médecine"
    return frame.to_csv(index=False, lineterminator="\n").encode("latin-1")


def _unterminated_quote(frame: pd.DataFrame) -> bytes:
    lines = _lines(frame)
    lines[BROKEN_ROW + 1] = lines[BROKEN_ROW + 1].replace(",", f',"{PLANTED_TEXT}', 1)
    return ("\n".join(lines) + "\n").encode()


def _too_many_fields(frame: pd.DataFrame) -> bytes:
    lines = _lines(frame)
    lines[BROKEN_ROW + 1] += f",{PLANTED_TEXT}"
    return ("\n".join(lines) + "\n").encode()


def _mixed_line_endings(frame: pd.DataFrame) -> bytes:
    lines = _lines(frame)
    half = len(lines) // 2
    return ("\r\n".join(lines[:half]) + "\r\n" + "\n".join(lines[half:]) + "\n").encode()


def _blank_lines(frame: pd.DataFrame) -> bytes:
    lines = _lines(frame)
    return ("\n".join(lines[:10]) + "\n\n\n" + "\n".join(lines[10:]) + "\n\n").encode()


def _headerless(frame: pd.DataFrame) -> bytes:
    return ("\n".join(_lines(frame)[1:]) + "\n").encode()


def _truncated_last_line(frame: pd.DataFrame) -> bytes:
    text = to_csv_bytes(frame).decode().rstrip("\n")
    return text[: text.rfind(",", 0, len(text) - 40)].encode()


def _short_row(frame: pd.DataFrame) -> bytes:
    lines = _lines(frame)
    lines[BROKEN_ROW + 1] = ",".join(lines[BROKEN_ROW + 1].split(",")[:40])
    return ("\n".join(lines) + "\n").encode()


def _repeated_header(frame: pd.DataFrame) -> bytes:
    lines = _lines(frame)
    return ("\n".join([*lines[:21], lines[0], *lines[21:]]) + "\n").encode()


def _duplicated_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, frame.iloc[[5]]], ignore_index=True)


def _duplicated_ids(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[7, diabetes130.ENCOUNTER_ID] = frame.loc[2, diabetes130.ENCOUNTER_ID]
    return frame


def _zero_padded(column: str, source_row: int, row: int) -> Callable[[pd.DataFrame], bytes]:
    def build(frame: pd.DataFrame) -> bytes:
        frame.loc[row, column] = "0" + frame.loc[source_row, column]
        return to_csv_bytes(frame)

    return build



def _identifier_column(frame: pd.DataFrame) -> pd.DataFrame:
    frame.insert(2, "patient_name", PLANTED_NAME)
    return frame


CASES: tuple[BadExtract, ...] = (
    # The header: refused before anything is read.
    BadExtract("missing_column", REFUSED, r"missing column\(s\): num_medications$",
               _frame(lambda f: f.drop(columns=["num_medications"]))),
    BadExtract("extra_column", REFUSED, r"unexpected column\(s\): ward_code$",
               _frame(lambda f: f.assign(ward_code="W1"))),
    BadExtract("renamed_column", REFUSED, r"missing column\(s\): A1Cresult; unexpected column\(s\): a1c_result",
               _frame(lambda f: f.rename(columns={"A1Cresult": "a1c_result"}))),
    BadExtract("duplicated_column", REFUSED, r"duplicated column\(s\): race; missing column\(s\): gender",
               _frame(lambda f: f.rename(columns={"gender": "race"}))),
    BadExtract("columns_swapped", REFUSED, r"^columns are in a different order than the declared format$",
               _frame(_swap_columns)),
    BadExtract("header_case_and_spaces", REFUSED,
               r"unexpected column\(s\): 'Encounter_ID '; differing from the declared name only in case "
               r"or surrounding spaces: encounter_id",
               _frame(lambda f: f.rename(columns={"encounter_id": "Encounter_ID "}))),
    BadExtract("missing_header_row", REFUSED, r"is the header row missing\?", _headerless),
    BadExtract("semicolon_delimiter", REFUSED, r"single column: is the delimiter a comma\?",
               lambda f: to_csv_bytes(f, sep=";")),
    BadExtract("tab_delimiter", REFUSED, r"single column: is the delimiter a comma\?",
               lambda f: to_csv_bytes(f, sep="\t")),
    BadExtract("empty_file", REFUSED, r"^the file is empty: no header line$", lambda f: b""),
    BadExtract("header_only", REFUSED, r"^the file holds a header but no rows$",
               lambda f: (",".join(diabetes130.COLUMNS) + "\n").encode()),
    # The bytes: refused when the rows cannot be read as UTF-8 CSV.
    BadExtract("latin1_bytes", REFUSED, r"^the file is not valid UTF-8 at line 5$", _latin1),
    BadExtract("utf16_encoding", REFUSED, r"^the file is UTF-16 encoded; the declared format is UTF-8$",
               lambda f: to_csv_bytes(f).decode().encode("utf-16")),
    BadExtract("unterminated_quote", REFUSED, r"^unterminated quote at line 5$", _unterminated_quote,
               planted=(PLANTED_TEXT,)),
    BadExtract("too_many_fields", REFUSED, r"^malformed row at line 5: expected 50 fields, found 51$",
               _too_many_fields, planted=(PLANTED_TEXT,)),
    BadExtract("ten_mb_field", REFUSED, r"^line 5 is longer than the maximum line size of [\d,]+ bytes",
               _value("medical_specialty", PLANTED_TEXT + "x" * (10 << 20)), planted=(PLANTED_TEXT,)),
    # Tolerated variants of the format: every row lands with the clean extract's values.
    BadExtract("utf8_bom", LANDED, "", lambda f: b"\xef\xbb\xbf" + to_csv_bytes(f)),
    BadExtract("crlf_line_endings", LANDED, "", lambda f: to_csv_bytes(f).replace(b"\n", b"\r\n")),
    BadExtract("mixed_line_endings", LANDED, "", _mixed_line_endings),
    BadExtract("cr_only_line_endings", LANDED, "", lambda f: to_csv_bytes(f).replace(b"\n", b"\r")),
    BadExtract("blank_lines", LANDED, "", _blank_lines),
    BadExtract("all_fields_quoted", LANDED, "", lambda f: to_csv_bytes(f, quoting=csv.QUOTE_ALL)),
    # Rows that land but fail the declared format: quarantined with "column:check".
    BadExtract("quoted_newline_in_field", QUARANTINED, "medical_specialty:in_vocabulary",
               _value("medical_specialty", f"Surgery\n{PLANTED_TEXT}"), planted=(PLANTED_TEXT,)),
    BadExtract("nul_byte", QUARANTINED, "medical_specialty:in_vocabulary",
               _value("medical_specialty", f"Surg\x00{PLANTED_TEXT}"), planted=(PLANTED_TEXT,)),
    BadExtract("text_in_count", QUARANTINED, "num_medications:integer_in_1_120", _value("num_medications", "twelve")),
    BadExtract("negative_count", QUARANTINED, "num_procedures:integer_in_0_10", _value("num_procedures", "-1")),
    BadExtract("decimal_count", QUARANTINED, "number_diagnoses:integer_in_1_20", _value("number_diagnoses", "9.0")),
    BadExtract("out_of_range_count", QUARANTINED, "time_in_hospital:integer_in_1_14",
               _value("time_in_hospital", "99")),
    BadExtract("whitespace_padded_count", QUARANTINED, "num_lab_procedures:integer_in_1_200",
               _value("num_lab_procedures", " 41 ")),
    BadExtract("out_of_vocabulary_code", QUARANTINED, "admission_type_id:in_vocabulary",
               _value("admission_type_id", "99")),
    BadExtract("lowercase_category", QUARANTINED, "race:in_vocabulary", _value("race", "caucasian")),
    BadExtract("whitespace_padded_category", QUARANTINED, "gender:in_vocabulary", _value("gender", " Female ")),
    BadExtract("missing_marker_not_allowed", QUARANTINED, "age:in_vocabulary", _value("age", diabetes130.MISSING)),
    BadExtract("unexpected_label", QUARANTINED, "readmitted:in_vocabulary", _value("readmitted", "YES")),
    BadExtract("empty_label", QUARANTINED, "readmitted:not_nullable", _value("readmitted", "")),
    BadExtract("empty_column", QUARANTINED, "race:not_nullable", _frame(lambda f: f.assign(race="")),
               quarantined=ROWS),
    BadExtract("bad_icd9_code", QUARANTINED, "diag_1:icd9_code", _value("diag_1", "ABC.1")),
    BadExtract("non_numeric_patient_id", QUARANTINED, "patient_nbr:positive_integer",
               _value("patient_nbr", "P-778899")),
    BadExtract("scientific_notation_id", QUARANTINED, "encounter_id:positive_integer",
               _value("encounter_id", "1.3E+5")),
    BadExtract("duplicated_rows", QUARANTINED, "encounter_id:duplicate_encounter_id", _frame(_duplicated_rows),
               rows_landed=ROWS + 1, quarantined=2),
    BadExtract("duplicated_encounter_ids", QUARANTINED, "encounter_id:duplicate_encounter_id",
               _frame(_duplicated_ids), quarantined=2),
    BadExtract("truncated_last_line", QUARANTINED, "readmitted:not_nullable", _truncated_last_line),
    BadExtract("short_row", QUARANTINED, "readmitted:not_nullable", _short_row),
    BadExtract("repeated_header_row", QUARANTINED, "encounter_id:positive_integer", _repeated_header,
               rows_landed=ROWS + 1),
    BadExtract("zero_padded_encounter_id", QUARANTINED, "encounter_id:positive_integer",
               _zero_padded(diabetes130.ENCOUNTER_ID, 2, 7)),
    BadExtract("zero_padded_patient_id", QUARANTINED, "patient_nbr:positive_integer",
               _zero_padded(diabetes130.PATIENT_ID, 4, 5)),
    # Identifiers in otherwise valid columns: the de-identification gate rejects the extract.
    BadExtract("name_in_values", REJECTED, "medical_specialty:name", _value("medical_specialty", PLANTED_NAME),
               planted=(PLANTED_NAME,)),
    BadExtract("ssn_in_values", REJECTED, "payer_code:ssn", _value("payer_code", PLANTED_SSN), planted=(PLANTED_SSN,)),
    BadExtract("phone_in_values", REJECTED, "weight:phone", _value("weight", PLANTED_PHONE), planted=(PLANTED_PHONE,)),
    BadExtract("email_in_values", REJECTED, "medical_specialty:email", _value("medical_specialty", PLANTED_EMAIL),
               planted=(PLANTED_EMAIL,)),
    BadExtract("full_date_in_values", REJECTED, "weight:full_date", _value("weight", PLANTED_DATE),
               planted=(PLANTED_DATE,)),
    BadExtract("zip_in_values", REJECTED, "weight:zip5", _value("weight", PLANTED_ZIP), planted=(PLANTED_ZIP,)),
    BadExtract("ssn_in_patient_id", REJECTED, "patient_nbr:ssn", _value("patient_nbr", PLANTED_SSN),
               planted=(PLANTED_SSN,)),
    BadExtract("email_in_encounter_id", REJECTED, "encounter_id:email", _value("encounter_id", PLANTED_EMAIL),
               planted=(PLANTED_EMAIL,)),
    BadExtract("identifier_column_name", REJECTED, "patient_name:name", _frame(_identifier_column),
               planted=(PLANTED_NAME,)),
)

BY_NAME: dict[str, BadExtract] = {case.name: case for case in CASES}


def cases(outcome: str) -> list[BadExtract]:
    """The cases with one outcome, in corpus order."""
    return [case for case in CASES if case.outcome == outcome]
