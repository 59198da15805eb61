"""The pydantic model of a source contract file: strict, closed, cross-checked.

Every section forbids unknown keys. Checks that span sections (a role, key, exemption or
sensitive attribute naming a column the contract lacks) raise ``ValueError("<field path>: …")``
so the loader can report one line naming the file and the field.
"""

from __future__ import annotations

import codecs
import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clinical_mlops.ingestion import deid

__all__ = [
    "COLUMN_TYPES", "Column", "FileFormat", "IdentifierExemption", "Key", "KnownExtract", "Pattern",
    "Range", "Roles", "SensitiveAttribute", "SourceContract", "band_labels",
]

COLUMN_TYPES: tuple[str, ...] = ("boolean", "category", "integer", "number", "string")
"""The closed set of column types; every raw value is text, the type says which text is valid."""

LINE_ENDINGS = ("lf", "crlf", "cr", "mixed")
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")

NonEmpty = Annotated[str, Field(min_length=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), f"a {type(value).__name__}")


class FileFormat(_Section):
    """How the file is written: what the landing step accepts before any value is read."""

    delimiter: str = ","
    quote: str = '"'
    encoding: str = "utf-8"
    header: bool = True
    byte_order_mark: Literal["tolerated", "refused"] = "tolerated"
    line_endings: list[Literal["lf", "crlf", "cr", "mixed"]] = ["lf", "crlf"]

    @field_validator("delimiter", "quote")
    @classmethod
    def _one_character(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError(f"must be a single character, got {len(value)} characters")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value


class Pattern(_Section):
    """A regular expression a whole value must match (ASCII semantics, as RE2 in DuckDB)."""

    name: str
    regex: NonEmpty
    description: str = ""

    @field_validator("name")
    @classmethod
    def _snake_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a snake_case check name")
        return value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a valid regular expression ({error})") from None
        return value


class Range(_Section):
    """Inclusive bounds of a numeric column."""

    min: int | float
    max: int | float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not (math.isfinite(self.min) and math.isfinite(self.max)) or self.min > self.max:
            raise ValueError(f"min ({self.min}) must be finite and not above max ({self.max})")
        return self


class Column(_Section):
    """One column: its type, whether it may be missing, and what a valid value looks like.

    ``missing_tokens`` (default: the contract's) are the values meaning "missing"; a column
    that is not ``nullable`` fails them. An empty field is never missing, it fails
    ``not_nullable``. ``not_measured`` is a legitimate value meaning "not measured" (kept as is,
    not made missing). At most one of ``allowed_values``, ``pattern`` and ``range`` per column.
    """

    type: str
    description: str = ""
    nullable: bool = False
    missing_tokens: list[str] | None = None
    not_measured: str | None = None
    allowed_values: list[Any] | None = None
    pattern: Pattern | None = None
    range: Range | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> Any:
        if value not in COLUMN_TYPES:
            raise ValueError(f"unknown type {value!r} (expected one of {', '.join(COLUMN_TYPES)})")
        return value

    @field_validator("allowed_values", mode="before")
    @classmethod
    def _a_list(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, list):
            raise ValueError(f"must be a list of values, got {_kind(value)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Column:
        declared = [n for n in ("allowed_values", "pattern", "range") if getattr(self, n) is not None]
        if len(declared) > 1:
            raise ValueError(f"{declared[1]}: declare at most one of allowed_values, pattern and range")
        if self.type == "category" and self.allowed_values is None:
            raise ValueError("allowed_values: a category column needs its list of allowed values")
        if self.type == "boolean" and declared:
            raise ValueError(f"{declared[0]}: a boolean column takes no {declared[0]}")
        if self.range is not None and self.type not in ("integer", "number"):
            raise ValueError(f"range: only an integer or number column has a range, not a {self.type} one")
        if self.type == "integer" and self.range is not None:
            for bound in ("min", "max"):
                if not isinstance(getattr(self.range, bound), int):
                    raise ValueError(f"range.{bound}: an integer column's bounds are integers")
        if self.allowed_values is not None:
            self._check_allowed_values(self.allowed_values)
        return self

    def _check_allowed_values(self, values: list[Any]) -> None:
        if not values:
            raise ValueError("allowed_values: the list is empty")
        wanted = {"integer": (int,), "number": (int, float)}.get(self.type, (str,))
        for i, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, wanted):
                hint = " (quote it in YAML)" if self.type in ("category", "string") else ""
                raise ValueError(f"allowed_values.{i}: expected {'a string' if wanted == (str,) else 'a number'} "
                                 f"for a {self.type} column, got {_kind(value)}{hint}")
        texts = [str(v) for v in values]
        if len(set(texts)) != len(texts):
            repeated = sorted({t for t in texts if texts.count(t) > 1})
            raise ValueError(f"allowed_values: repeated value(s) {', '.join(map(repr, repeated))}")

    def tokens(self, default: list[str]) -> tuple[str, ...]:
        """The missing tokens of this column, the contract's default unless it sets its own."""
        return tuple(default if self.missing_tokens is None else self.missing_tokens)

    def vocabulary(self) -> tuple[str, ...] | None:
        """Allowed values as the text they appear as in the file, plus ``not_measured``."""
        if self.allowed_values is None:
            return None
        values = tuple(str(v) for v in self.allowed_values)
        extra = (self.not_measured,) if self.not_measured is not None and self.not_measured not in values else ()
        return values + extra


class Roles(_Section):
    """What some columns mean to the pipeline; each role is optional."""

    encounter_id: str | None = None
    patient_id: str | None = None
    event_order: str | None = None
    outcomes: list[str] = []


class Key(_Section):
    """Columns unique per row: duplicates are an error only here, within ``scope``."""

    columns: list[str] = Field(min_length=1)
    scope: Literal["extract", "source"] = "source"
    reason: NonEmpty


class IdentifierExemption(_Section):
    """A column the identifier scan does not test for ``kinds``, and why."""

    column: str
    kinds: list[str] = Field(min_length=1)
    reason: NonEmpty

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, kinds: list[str]) -> list[str]:
        unknown = [k for k in kinds if k not in deid.IDENTIFIER_KINDS]
        if unknown:
            raise ValueError(f"unknown identifier kind(s) {', '.join(map(repr, unknown))} "
                             f"(expected among {', '.join(sorted(deid.IDENTIFIER_KINDS))})")
        return kinds


class SensitiveAttribute(_Section):
    """An attribute whose groups the fairness audit compares against a reference group.

    Groups are the column's allowed values (renamed by ``labels``), or for a numeric column
    the ``bands`` cut at the given edges (``[lo-hi)``), plus ``missing_group`` for a missing value.
    """

    column: str | None = None
    bands: list[int | float] | None = None
    labels: dict[str, str] | None = None
    missing_group: str | None = None
    reference: NonEmpty
    reference_population: dict[str, float] | None = None
    required_groups: list[str] = []

    @field_validator("bands")
    @classmethod
    def _increasing(cls, edges: list[float] | None) -> list[float] | None:
        if edges is not None and (len(edges) < 3 or any(b <= a for a, b in zip(edges, edges[1:]))):
            raise ValueError("must be at least three strictly increasing edges (two bands)")
        return edges


def band_labels(edges: list[int | float]) -> tuple[str, ...]:
    """``[lo-hi)`` for each consecutive pair of edges (integers written without a decimal point)."""
    def text(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else str(x)
    return tuple(f"[{text(lo)}-{text(hi)})" for lo, hi in zip(edges, edges[1:]))


class KnownExtract(_Section):
    """A file of this source known in advance, and how it relates to the others."""

    file: NonEmpty
    description: str = ""
    role: Literal["primary", "subset", "external_site"]
    site: str | None = None
    subset_of: str | None = None
    rows: int | None = Field(default=None, ge=0)
    sha256: str | None = None

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.fullmatch(value):
            raise ValueError("must be 64 lower-case hexadecimal characters")
        return value

    @model_validator(mode="after")
    def _subset_named(self) -> KnownExtract:
        if (self.role == "subset") != (self.subset_of is not None):
            raise ValueError("subset_of: required for a subset extract and only for one")
        return self


class SourceContract(_Section):
    """One source: what its files look like and what its columns mean."""

    name: str
    description: NonEmpty
    provenance: NonEmpty
    licence: NonEmpty
    format: FileFormat = FileFormat()
    missing_tokens: list[str] = []
    columns: dict[str, Column] = Field(min_length=1)
    roles: Roles = Roles()
    key: Key | None = None
    identifier_scan_exemptions: list[IdentifierExemption] = []
    sensitive_attributes: dict[str, SensitiveAttribute] = {}
    intersections: list[list[str]] = []
    """Pairs (or more) of sensitive attributes audited jointly, e.g. ``[race, gender]``."""
    extracts: list[KnownExtract] = []
    notes: list[str] = []

    @field_validator("name")
    @classmethod
    def _snake_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a snake_case source name")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> SourceContract:
        def column(path: str, name: str | None) -> None:
            if name is not None and name not in self.columns:
                raise ValueError(f"{path}: {name!r} is not a column of the contract")

        for role in ("encounter_id", "patient_id", "event_order"):
            column(f"roles.{role}", getattr(self.roles, role))
        for i, name in enumerate(self.roles.outcomes):
            column(f"roles.outcomes.{i}", name)
        if self.key is not None:
            for i, name in enumerate(self.key.columns):
                column(f"key.columns.{i}", name)
        for i, exemption in enumerate(self.identifier_scan_exemptions):
            column(f"identifier_scan_exemptions.{i}.column", exemption.column)
        for name, attribute in self.sensitive_attributes.items():
            self._check_attribute(f"sensitive_attributes.{name}", name, attribute)
        for i, combo in enumerate(self.intersections):
            unknown = [a for a in combo if a not in self.sensitive_attributes]
            if unknown or len(combo) < 2:
                raise ValueError(f"intersections.{i}: {unknown or combo} — an intersection names two or more "
                                 "declared sensitive attributes")
        files = {e.file for e in self.extracts}
        for i, extract in enumerate(self.extracts):
            if extract.subset_of is not None and extract.subset_of not in files:
                raise ValueError(f"extracts.{i}.subset_of: {extract.subset_of!r} is not an extract of the contract")
        return self

    def _check_attribute(self, path: str, name: str, attribute: SensitiveAttribute) -> None:
        source = attribute.column or name
        if source not in self.columns:
            field = "column" if attribute.column else "column (defaults to the attribute's name)"
            raise ValueError(f"{path}.{field}: {source!r} is not a column of the contract")
        spec = self.columns[source]
        if attribute.bands is not None and spec.type not in ("integer", "number"):
            raise ValueError(f"{path}.bands: column {source!r} is {spec.type}, bands need a numeric column")
        vocabulary = spec.vocabulary()
        if attribute.labels is not None:
            unknown = [v for v in attribute.labels if vocabulary is None or v not in vocabulary]
            if unknown:
                raise ValueError(f"{path}.labels: {', '.join(map(repr, unknown))} not among the column's allowed values")
        groups = self.attribute_groups(name)
        if groups is None:
            return
        def known(field: str, group: str) -> None:
            if group not in groups:
                raise ValueError(f"{path}.{field}: {group!r} is not a group of {name} "
                                 f"(groups: {', '.join(groups)})")
        known("reference", attribute.reference)
        for i, group in enumerate(attribute.required_groups):
            known(f"required_groups.{i}", group)
            if group == attribute.reference:
                raise ValueError(f"{path}.required_groups.{i}: the reference group is not assessed against itself")
        if attribute.reference_population is not None:
            for group, share in attribute.reference_population.items():
                known(f"reference_population.{group}", group)
                if not 0 <= share <= 1:
                    raise ValueError(f"{path}.reference_population.{group}: a share is between 0 and 1")
            total = sum(attribute.reference_population.values())
            if abs(total - 1) > 0.01:
                raise ValueError(f"{path}.reference_population: shares sum to {total:.3f}, not 1")

    def attribute_groups(self, name: str) -> tuple[str, ...] | None:
        """The groups of a sensitive attribute, or ``None`` when the column does not enumerate them."""
        attribute = self.sensitive_attributes[name]
        spec = self.columns[attribute.column or name]
        if attribute.bands is not None:
            groups = band_labels(attribute.bands)
        elif (vocabulary := spec.vocabulary()) is not None:
            labels = attribute.labels or {}
            groups = tuple(dict.fromkeys(labels.get(v, v) for v in vocabulary))
        else:
            return None
        if attribute.missing_group is not None and attribute.missing_group not in groups:
            groups += (attribute.missing_group,)
        return groups
