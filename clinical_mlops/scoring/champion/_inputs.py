"""Canonical model inputs and their hashes: the same row hashes the same in batch and online."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime

import pandas as pd

from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.core.reporting import canonical_json

__all__ = ["canonical_features", "input_hashes", "input_sha256", "utc_now"]


def canonical_features(record: Mapping[str, object], spec: CohortSpec) -> dict[str, float | str]:
    """The model input of one row as plain JSON values: numerics as floats, categoricals as strings."""
    out: dict[str, float | str] = {}
    for name in spec.numeric_features:
        out[name] = float(record[name])  # type: ignore[arg-type]
    for name in spec.categorical_features:
        out[name] = str(record[name])
    return out


def input_sha256(record: Mapping[str, object], spec: CohortSpec) -> str:
    """sha256 of the canonical feature JSON: the same row hashes the same in batch and online."""
    return hashlib.sha256(canonical_json(canonical_features(record, spec)).encode()).hexdigest()


def input_hashes(frame: pd.DataFrame, spec: CohortSpec) -> list[str]:
    """``input_sha256`` of every row of ``frame``."""
    numeric = frame[list(spec.numeric_features)].astype("float64").to_dict("records") if spec.numeric_features else None
    categorical = (
        frame[list(spec.categorical_features)].astype(str).to_dict("records") if spec.categorical_features else None
    )
    out = []
    for i in range(len(frame)):
        row: dict[str, object] = {}
        if numeric is not None:
            row.update(numeric[i])
        if categorical is not None:
            row.update(categorical[i])
        out.append(hashlib.sha256(canonical_json(row).encode()).hexdigest())
    return out


def utc_now() -> datetime:
    """Naive UTC timestamp, as the warehouse stores times."""
    return datetime.now(UTC).replace(tzinfo=None)
