"""Deterministic synthetic EHR encounters in the exact Diabetes 130-US hospitals format.

The generator simulates patients as sequences of inpatient encounters. Each encounter's
``readmitted`` outcome is drawn from a logistic model of its own columns (prior inpatient
visits strongest, then emergency/outpatient visits, discharge disposition, length of stay,
medications, diagnoses, age, primary-diagnosis group, insulin and HbA1c), plus a hidden
patient frailty; a readmission usually produces the patient's next encounter, so repeat
patients, ``number_inpatient`` and the label hang together as in the real extract. Marginals
are calibrated against the UCI release (aggregate frequencies only; no row is copied).

Output mirrors reading the real CSV with ``dtype=str, keep_default_na=False``: 50 columns in
:data:`clinical_mlops.ingestion.diabetes130.COLUMNS` order, every value a ``str``.

Where things are: the calibration — every marginal, vocabulary weight and coefficient — is the
data file ``calibration.json`` beside this package's modules, read once by :mod:`._tables`; the
configuration is :mod:`._config`, the simulation :mod:`._simulate`, the columns and the CSV
writers :mod:`._generate`.
"""

from clinical_mlops.ingestion.synthetic._config import PopulationShift, SubgroupBias, SyntheticConfig
from clinical_mlops.ingestion.synthetic._generate import (
    generate_encounters,
    write_synthetic_csv,
    write_synthetic_extracts,
)

__all__ = [
    "PopulationShift",
    "SubgroupBias",
    "SyntheticConfig",
    "generate_encounters",
    "write_synthetic_csv",
    "write_synthetic_extracts",
]
