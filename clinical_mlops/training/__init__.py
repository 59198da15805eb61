"""Model training: the scikit-learn pipelines for tabular clinical risk models
(:mod:`.modelling`) and fitting, recording and registering one model of a cohort in MLflow
(:mod:`.fit`). Wired by ``clinical_mlops/defs/training``."""

__all__ = ["fit", "modelling"]
