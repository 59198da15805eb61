"""A cohort's feature table declared as plain values (no pandas or Pandera): its columns, their types
and checks, and the version of the SQL that builds it.

:func:`clinical_mlops.features.build.feature_schema` turns :func:`feature_columns` into the Pandera
schema the table is validated against; :func:`table_schema_columns` gives the same columns as
dagster-pandera would show them (type, uniqueness, the checks' names), so the Definitions load
without Pandera. ``clinical_mlops_tests/system/test_column_schemas.py`` checks the two agree.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from clinical_mlops.features.cohort import CohortSpec

__all__ = ["FeatureCheck", "FeatureColumn", "feature_columns", "feature_sql_version"]

_DTYPE_NAMES = {"int": "int64", "float": "float64", "str": "str"}
"""How Pandera names each column type (``str(pa.Column(t).dtype)``)."""


@dataclass(frozen=True)
class FeatureCheck:
    """One of Pandera's built-in checks: ``kind`` is its ``Check`` method, ``value`` its argument."""

    kind: str
    """``str_matches``, ``isin`` or ``ge``."""
    value: object
    name: str

    @property
    def error(self) -> str:
        """Pandera's own text for the check (its ``error``), which the UI shows as the constraint."""
        if self.kind == "str_matches":
            return f"str_matches('{self.value}')"
        if self.kind == "isin":
            return f"isin({list(self.value)!r})"
        if self.kind == "ge":
            return f"greater_than_or_equal_to({self.value})"
        raise ValueError(f"unknown check kind {self.kind!r}")


@dataclass(frozen=True)
class FeatureColumn:
    name: str
    dtype: str
    """``int``, ``float`` or ``str``."""
    checks: tuple[FeatureCheck, ...] = ()
    unique: bool = False
    coerce: bool = False

    @property
    def dtype_name(self) -> str:
        return _DTYPE_NAMES[self.dtype]


def feature_columns(spec: CohortSpec) -> list[FeatureColumn]:
    """The feature table's columns in order: keys, label, sensitive attributes, numeric then categorical
    features; no missing values, non-negative numerics, a 0/1 label."""
    columns = [
        FeatureColumn("encounter_id", "int", unique=True, coerce=True),
        FeatureColumn("patient_key", "str", (FeatureCheck("str_matches", r"^[0-9a-f]{16}$", "pseudonymised"),)),
        FeatureColumn("extract_id", "str"),
        FeatureColumn("label", "int", (FeatureCheck("isin", (0, 1), "binary_label"),), coerce=True),
    ]
    columns += [FeatureColumn(attribute, "str") for attribute in spec.sensitive_attributes]
    columns += [FeatureColumn(feature, "float", (FeatureCheck("ge", 0, "non_negative"),), coerce=True)
                for feature in spec.numeric_features]
    columns += [FeatureColumn(feature, "str") for feature in spec.categorical_features]
    by_name = {c.name: c for c in columns}  # a name listed twice keeps its last declaration, as a dict would
    return list(by_name.values())


def feature_sql_version(spec: CohortSpec) -> str:
    """A hash of everything that defines the feature table: the cohort file, its SQL and the source contract."""
    return hashlib.sha256((spec.spec_hash + spec.contract_sha256).encode()).hexdigest()[:12]
