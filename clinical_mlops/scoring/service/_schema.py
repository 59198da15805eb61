"""The request schema of the scoring service, generated from the cohort spec (the training schema)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from clinical_mlops.features.cohort import CohortSpec

__all__ = ["feature_model", "request_model", "validation_errors"]


def feature_model(spec: CohortSpec) -> type[BaseModel]:
    """Pydantic model of one encounter's features: the training schema of the cohort."""
    fields: dict[str, tuple] = {}
    for name in spec.numeric_features:
        fields[name] = (float, Field(..., ge=0, allow_inf_nan=False, description="numeric feature, >= 0"))
    for name in spec.categorical_features:
        fields[name] = (str, Field(..., min_length=1, max_length=200, description="categorical feature"))
    return create_model(
        f"{spec.name}_features", __config__=ConfigDict(extra="forbid", title=f"{spec.title}: features"), **fields
    )


def request_model(spec: CohortSpec) -> type[BaseModel]:
    """The body of ``POST /v1/predict``: optional encounter id (for the label join) and features."""
    return create_model(
        f"{spec.name}_prediction_request",
        __config__=ConfigDict(extra="forbid"),
        encounter_id=(int | None, Field(None, ge=1, description="the encounter scored, so outcomes can be joined")),
        features=(feature_model(spec), Field(...)),
    )


def validation_errors(exc: ValidationError) -> list[dict]:
    """Field path, kind and message of each error; the offending value is never echoed."""
    return [
        {"field": ".".join(str(p) for p in error["loc"]) or "body", "type": error["type"], "message": error["msg"]}
        for error in exc.errors(include_input=False, include_url=False)
    ]
