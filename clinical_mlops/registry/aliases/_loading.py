"""A registered model loaded for batch scoring, with the input columns its MLflow signature declares."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clinical_mlops.registry.aliases._history import RegistryError

__all__ = ["ScoringModel", "load_scoring_model", "model_signature_columns"]


@dataclass(frozen=True)
class ScoringModel:
    """A registered model loaded for batch scoring, with the input columns its signature declares."""

    name: str
    version: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    model: object

    @property
    def input_columns(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    def missing_columns(self, columns) -> list[str]:
        return [c for c in self.input_columns if c not in set(columns)]

    def predict_risk(self, frame) -> np.ndarray:
        """Positive-class probability per row; columns are taken by name and typed per the signature."""
        missing = self.missing_columns(frame.columns)
        if missing:
            raise RegistryError(f"{self.name} v{self.version} needs columns the data lacks: {', '.join(missing)}")
        inputs = frame[list(self.input_columns)].astype(
            {**{c: "float64" for c in self.numeric}, **{c: "object" for c in self.categorical}}
        )
        return self.model.predict_proba(inputs)[:, 1]


def model_signature_columns(model: str, version: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(numeric, categorical) input columns from a registered version's MLflow signature."""
    from clinical_mlops.core import tracking  # noqa: F401
    import mlflow

    signature = mlflow.models.get_model_info(f"models:/{model}/{version}").signature
    if signature is None:
        raise RegistryError(f"{model} v{version} was registered without a signature")
    numeric, categorical = [], []
    for spec in signature.inputs.inputs:
        (categorical if str(spec.type) in ("string", "DataType.string") else numeric).append(spec.name)
    return tuple(numeric), tuple(categorical)


def load_scoring_model(model: str, version: str) -> ScoringModel:
    """Load a registered sklearn model (skops, types trusted at logging) with its signature's columns."""
    from clinical_mlops.core import tracking

    numeric, categorical = model_signature_columns(model, version)
    return ScoringModel(model, str(version), numeric, categorical, tracking.load_model(f"models:/{model}/{version}"))
