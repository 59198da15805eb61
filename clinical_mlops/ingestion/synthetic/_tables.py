"""The generator's calibration, read once from ``calibration.json``, and the sampling tables built from it.

``calibration.json`` (shipped beside this module) holds the aggregate frequencies of the UCI
release and the simulation's coefficients; this module turns them into arrays, cumulative
distributions and the vectorised inverse-CDF draws the simulation uses. Structure — the
vocabularies (from :mod:`clinical_mlops.ingestion.diabetes130`), the primary-diagnosis grouping
of ICD-9 codes, the ten-year window — stays in code.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import numpy as np
from scipy.special import ndtr

from clinical_mlops.ingestion import diabetes130 as d130

# A private module: its names are the package's own (used by ._simulate and ._generate).
__all__ = [
    "A1C_READMIT", "ADMISSION_SOURCES", "ADMISSION_SOURCE_CDF", "ADMISSION_TYPE_CDF", "AGE_READMIT",
    "AGE_SHIFT_SLOPE", "AGE_WEIGHTS", "CHANGE_WITHOUT_DOSE_CHANGE", "CHOL", "COEF_DIAGNOSES", "COEF_EMERGENCY",
    "COEF_INPATIENT", "COEF_MEDICATIONS", "COEF_OUTPATIENT", "COEF_TIME", "DAYS", "DEATH_CDF", "DEATH_IDS",
    "DEATH_INTERCEPT", "DIAB", "DIAG1_CDF", "DIAG1_MISSING", "DIAG2_CDF", "DIAG2_MISSING", "DIAG3_CDF",
    "DIAG3_MISSING", "DIAGNOSES_CDF", "DISCHARGE_CDF", "DISCHARGE_IDS", "DISCHARGE_READMIT", "EMERGENCY_MU",
    "FRAILTY_GT30", "FRAILTY_LT30", "FRAILTY_NEXT", "GENDER_CDF", "GLUCOSE_TESTED_BY_TYPE", "GROUP_LABS",
    "GROUP_MEDICATIONS", "GROUP_PROCEDURES", "GROUP_READMIT", "GROUP_TIME", "GT30_INTERCEPT", "ICD_CODES",
    "ICD_GROUPS", "INPATIENT_MU", "INSULIN_READMIT", "LT30_INTERCEPT", "MAX_ENCOUNTERS_PER_PATIENT",
    "MEDS_OTHER", "MED_CDFS", "NEXT_ENCOUNTER_LOGIT", "OUTPATIENT_MU", "PAYER_CDF", "PAYER_VALUES",
    "PROCEDURE_CDF", "RACE_SHIFT", "RACE_VALUES", "RACE_WEIGHTS", "SPECIALTY_CDF", "SPECIALTY_VALUES",
    "TIME_CDF", "WEIGHT_CDF", "WEIGHT_RECORDED", "cdf", "draw", "from_latent",
]

DAYS = 3650.0  # the release covers ten years of admissions
MAX_ENCOUNTERS_PER_PATIENT = 40
# Primary-diagnosis groups (Strack et al. 2014), in the order icd9_group numbers them.
GROUPS = ("circulatory", "respiratory", "digestive", "diabetes", "injury", "musculoskeletal",
          "genitourinary", "neoplasms", "other")
DIAB = 3
RACE_VALUES = (*d130.RACES, d130.MISSING)  # code 5 = "?"
PAYER_VALUES = (d130.MISSING, *d130.PAYER_CODES)
MEDS_OTHER = tuple(m for m in d130.MEDICATIONS if m != "insulin")


def _load() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("calibration.json").read_text(encoding="utf-8")
    calibration = json.loads(text)
    names = tuple(calibration["primary_diagnosis_groups"]["names"])
    if names != GROUPS:
        raise ValueError(f"calibration.json: primary_diagnosis_groups.names must be {list(GROUPS)}, got {list(names)}")
    return calibration


CALIBRATION: dict[str, Any] = _load()
"""The parsed ``calibration.json`` (read-only by convention)."""


def _floats(value: Any) -> np.ndarray:
    return np.array(value, dtype=float)


_demographics = CALIBRATION["demographics"]
RACE_WEIGHTS = _floats(_demographics["race_weights"])
RACE_SHIFT = _floats(_demographics["race_shift"])  # log-weight change at strength 1
AGE_WEIGHTS = _floats(_demographics["age_weights"])
AGE_SHIFT_SLOPE = float(_demographics["age_shift_slope"])  # log-weight change per band above [60-70)
WEIGHT_RECORDED = float(_demographics["weight_recorded"])

_admission = CALIBRATION["admission"]
ADMISSION_SOURCES = np.array(_admission["sources"], dtype=np.int64)
GLUCOSE_TESTED_BY_TYPE = _floats(_admission["glucose_tested_by_type"])

_groups = CALIBRATION["primary_diagnosis_groups"]
GROUP_TIME = _floats(_groups["time"])
GROUP_LABS = _floats(_groups["labs"])
GROUP_PROCEDURES = _floats(_groups["procedures"])
GROUP_MEDICATIONS = _floats(_groups["medications"])
GROUP_READMIT = _floats(_groups["readmit"])

_readmission = CALIBRATION["readmission"]
AGE_READMIT = _floats(_readmission["age"])
INSULIN_READMIT = _floats(_readmission["insulin"])  # No, Steady, Up, Down
A1C_READMIT = _floats(_readmission["a1c"])  # None, Norm, >7, >8
LT30_INTERCEPT = float(_readmission["lt30_intercept"])
GT30_INTERCEPT = float(_readmission["gt30_intercept"])
FRAILTY_LT30 = float(_readmission["frailty_lt30"])
FRAILTY_GT30 = float(_readmission["frailty_gt30"])
COEF_INPATIENT = float(_readmission["coef_inpatient"])
COEF_EMERGENCY = float(_readmission["coef_emergency"])
COEF_OUTPATIENT = float(_readmission["coef_outpatient"])
COEF_TIME = float(_readmission["coef_time"])
COEF_MEDICATIONS = float(_readmission["coef_medications"])
COEF_DIAGNOSES = float(_readmission["coef_diagnoses"])
NEXT_ENCOUNTER_LOGIT = _floats(_readmission["next_encounter_logit"])  # after NO, >30, <30
FRAILTY_NEXT = float(_readmission["frailty_next"])

_utilisation = CALIBRATION["utilisation"]
INPATIENT_MU = float(_utilisation["inpatient_mu"])
EMERGENCY_MU = float(_utilisation["emergency_mu"])
OUTPATIENT_MU = float(_utilisation["outpatient_mu"])
DEATH_INTERCEPT = float(_utilisation["death_intercept"])

CHANGE_WITHOUT_DOSE_CHANGE = float(CALIBRATION["medications"]["change_without_dose_change"])
DIAG1_MISSING = float(CALIBRATION["diagnosis_missing"]["diag_1"])
DIAG2_MISSING = float(CALIBRATION["diagnosis_missing"]["diag_2"])
DIAG3_MISSING = float(CALIBRATION["diagnosis_missing"]["diag_3"])


# --- sampling helpers --------------------------------------------------------------------------


def icd9_group(code: str) -> int:
    """Index into ``GROUPS`` of an ICD-9 code (V and E codes are "other")."""
    if code[0] in "VE":
        return 8
    value = float(code)
    major = int(value)
    if 390 <= major <= 459 or major == 785:
        return 0
    if 460 <= major <= 519 or major == 786:
        return 1
    if 520 <= major <= 579 or major == 787:
        return 2
    if major == 250:
        return 3
    if 800 <= major <= 999:
        return 4
    if 710 <= major <= 739:
        return 5
    if 580 <= major <= 629 or major == 788:
        return 6
    if 140 <= major <= 239:
        return 7
    return 8


def cdf(weights: np.ndarray) -> np.ndarray:
    """Row-wise cumulative distribution of non-negative weights; last column exactly 1."""
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    c = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
    c[:, -1] = 1.0
    return c


def _flat(table: np.ndarray) -> np.ndarray:
    """Stack the rows of a CDF table into one increasing array (row r spans (r, r + 1])."""
    return (table + np.arange(table.shape[0])[:, None]).ravel()


def draw(rng: np.random.Generator, table: np.ndarray, cond: np.ndarray | None = None,
         size: int | None = None) -> np.ndarray:
    """Category indices drawn from row ``cond`` of a CDF table (vectorised inverse CDF)."""
    if cond is None:
        return np.searchsorted(table[0] if table.ndim == 2 else table, rng.random(size), side="right")
    k = table.shape[1]
    flat = _flat(table)
    return np.searchsorted(flat, cond + rng.random(cond.size), side="right") - cond * k


def from_latent(latent: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Discrete values (0-based) from standard-normal latents through a CDF (Gaussian copula)."""
    idx = np.searchsorted(table, ndtr(latent), side="right")
    return np.minimum(idx, table.size - 1)


# --- tables derived from the calibration -------------------------------------------------------


def _icd_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = CALIBRATION["icd9"]["counts"]
    codes = np.array(list(counts), dtype=object)
    weights = np.array([[float(x) for x in row] for row in counts.values()])
    groups = np.array([icd9_group(c) for c in codes], dtype=np.int64)
    return codes, weights, groups


ICD_CODES, ICD_WEIGHTS, ICD_GROUPS = _icd_table()
_stay = CALIBRATION["stay"]
CHOL = np.linalg.cholesky(_floats(_stay["latent_correlation"]))
TIME_CDF = cdf(_floats(_stay["time_weights"]))[0]
PROCEDURE_CDF = cdf(_floats(_stay["procedure_weights"]))[0]
DIAGNOSES_CDF = cdf(_floats(_stay["diagnoses_weights"]))[0]
GENDER_CDF = cdf(_floats(_demographics["gender_weights"]))
WEIGHT_CDF = cdf(_floats(_demographics["weight_weights"]))
ADMISSION_TYPE_CDF = cdf(_floats(_admission["type_weights"]))
ADMISSION_SOURCE_CDF = cdf(_floats(_admission["source_by_type"]))
PAYER_CDF = cdf(_floats(CALIBRATION["payer"]["by_age"]))
_death = {int(k): v for k, v in CALIBRATION["discharge"]["death_or_hospice"].items()}
DEATH_IDS = np.array(list(_death))
DEATH_CDF = cdf(np.array(list(_death.values()), dtype=float))
MED_CDFS = {m: cdf(np.array(CALIBRATION["medications"]["counts"][m], dtype=float)) for m in MEDS_OTHER}


def _discharge_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disposition ids, CDF per (age band, length of stay) and <30 effect per id."""
    dispositions = {int(k): v for k, v in CALIBRATION["discharge"]["dispositions"].items()}
    ids = np.array(list(dispositions))
    base = np.log(np.array([v[0] for v in dispositions.values()], dtype=float))
    age_tilt = np.array([float(v[1]) for v in dispositions.values()])
    time_tilt = np.array([float(v[2]) for v in dispositions.values()])
    age_z = (np.arange(10) * 10 + 5 - 65) / 15.0
    time_z = (np.arange(1, 15) - 4.4) / 3.0
    logw = (base[None, None, :] + age_z[:, None, None] * age_tilt[None, None, :]
            + time_z[None, :, None] * time_tilt[None, None, :])
    w = np.exp(logw - logw.max(axis=2, keepdims=True)).reshape(140, ids.size)
    effect = np.zeros(max(d130.DISCHARGE_DISPOSITION_IDS) + 1)
    for k, v in dispositions.items():
        effect[k] = v[3]
    return ids, cdf(w), effect


DISCHARGE_IDS, DISCHARGE_CDF, DISCHARGE_READMIT = _discharge_tables()


def _diag1_cdf() -> np.ndarray:
    """Primary-diagnosis code CDF for the three age groups (<40, 40-69, 70+)."""
    tilt = _floats(_groups["age_tilt"])  # log-weight of each group by age group
    return cdf(ICD_WEIGHTS[:, 0][None, :] * np.exp(tilt[:, ICD_GROUPS]))


DIAG1_CDF = _diag1_cdf()
DIAG2_CDF = cdf(ICD_WEIGHTS[:, 1])
DIAG3_CDF = cdf(ICD_WEIGHTS[:, 2])


def _specialty_cdf() -> tuple[np.ndarray, np.ndarray]:
    """Specialty values ("?" first) and a CDF per primary-diagnosis group."""
    specialty = CALIBRATION["specialty"]
    missing, of = specialty["missing"]
    missing_share = missing / of
    names = list(d130.MEDICAL_SPECIALTIES)
    values = np.array([d130.MISSING, *names], dtype=object)
    base = np.array([float(specialty["counts"].get(n, 2)) for n in names])
    base *= (1.0 - missing_share) / base.sum()
    rows = []
    for group in GROUPS:
        w = base.copy()
        for n in specialty["favoured_by_group"][group]:
            w[names.index(n)] *= specialty["favoured_factor"]
        w *= (1.0 - missing_share) / w.sum()
        rows.append(np.concatenate([[missing_share], w]))
    return values, cdf(np.array(rows))


SPECIALTY_VALUES, SPECIALTY_CDF = _specialty_cdf()


def _check_csv_safe() -> None:
    """Every generated text value must be writable without CSV quoting (see write_synthetic_csv)."""
    texts = [*ICD_CODES, *SPECIALTY_VALUES, *PAYER_VALUES, *RACE_VALUES, *d130.COLUMNS]
    texts += [v for vocabulary in d130.CATEGORICAL_VOCABULARIES.values() for v in vocabulary]
    unsafe = [t for t in texts if any(ch in t for ch in ',"\r\n')]
    if unsafe:
        raise AssertionError(f"values need CSV quoting: {unsafe}")


_check_csv_safe()
