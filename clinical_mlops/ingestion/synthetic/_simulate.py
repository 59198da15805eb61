"""The simulation: patients as sequences of inpatient encounters, each with a drawn outcome.

Each encounter's ``readmitted`` outcome is drawn from a logistic model of its own columns
(prior inpatient visits strongest, then emergency/outpatient visits, discharge disposition,
length of stay, medications, diagnoses, age, primary-diagnosis group, insulin and HbA1c), plus a
hidden patient frailty; a readmission usually produces the patient's next encounter.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from clinical_mlops.ingestion import diabetes130 as d130
from clinical_mlops.ingestion.synthetic._tables import (
    A1C_READMIT, ADMISSION_SOURCES, ADMISSION_SOURCE_CDF, ADMISSION_TYPE_CDF, AGE_READMIT,
    AGE_SHIFT_SLOPE, AGE_WEIGHTS, CHOL, COEF_DIAGNOSES, COEF_EMERGENCY, COEF_INPATIENT,
    COEF_MEDICATIONS, COEF_OUTPATIENT, COEF_TIME, DAYS, DEATH_CDF, DEATH_IDS, DEATH_INTERCEPT, DIAB,
    DIAG1_CDF, DIAGNOSES_CDF, DISCHARGE_CDF, DISCHARGE_IDS, DISCHARGE_READMIT, EMERGENCY_MU,
    FRAILTY_GT30, FRAILTY_LT30, FRAILTY_NEXT, GENDER_CDF, GLUCOSE_TESTED_BY_TYPE, GROUP_LABS,
    GROUP_MEDICATIONS, GROUP_PROCEDURES, GROUP_READMIT, GROUP_TIME, GT30_INTERCEPT, ICD_GROUPS,
    INPATIENT_MU, INSULIN_READMIT, LT30_INTERCEPT, MAX_ENCOUNTERS_PER_PATIENT, NEXT_ENCOUNTER_LOGIT,
    OUTPATIENT_MU, PROCEDURE_CDF, RACE_SHIFT, RACE_WEIGHTS, TIME_CDF, cdf, draw, from_latent,
)

__all__ = ["simulate"]


def _new_patients(rng: np.random.Generator, n: int, shift: float) -> dict[str, np.ndarray]:
    """Patient-level attributes: demographics, entry time and hidden propensities."""
    race_w = RACE_WEIGHTS * np.exp(shift * RACE_SHIFT)
    age_w = AGE_WEIGHTS * np.exp(shift * AGE_SHIFT_SLOPE * (np.arange(10) - 6))
    band0 = draw(rng, cdf(age_w), size=n)
    hidden = rng.standard_normal((4, n))
    return {
        "race": draw(rng, cdf(race_w), size=n),
        "gender": draw(rng, GENDER_CDF, size=n),
        "age0": band0 * 10.0 + rng.random(n) * 10.0,
        "t0": rng.random(n) * DAYS,
        "frailty": hidden[0],
        "emergency": hidden[1],
        "outpatient": 0.4 * hidden[1] + np.sqrt(0.84) * hidden[2],
        "diabetes": hidden[3],
    }


def _admit(rng: np.random.Generator, pat: dict[str, np.ndarray], idx: np.ndarray,
           t: np.ndarray, recent: np.ndarray, shift: float) -> dict[str, np.ndarray]:
    """One inpatient encounter for each patient in ``idx`` admitted at day ``t``."""
    m = idx.size
    frailty = pat["frailty"][idx]
    dm = pat["diabetes"][idx]
    age = pat["age0"][idx] + (t - pat["t0"][idx]) / 365.25
    band = np.minimum(age // 10, 9).astype(np.int64)
    age_z = (age - 65.0) / 15.0

    adm_type = draw(rng, ADMISSION_TYPE_CDF, size=m)  # 0-based: id - 1
    adm_source = ADMISSION_SOURCES[draw(rng, ADMISSION_SOURCE_CDF, adm_type)]
    age_group = np.where(band < 4, 0, np.where(band < 7, 1, 2))
    diag1 = draw(rng, DIAG1_CDF, age_group)
    group = ICD_GROUPS[diag1]
    diab = (group == DIAB).astype(float)

    # Correlated severity latents -> length of stay, labs, procedures, medications, diagnoses.
    lat = rng.standard_normal((m, 5)) @ CHOL.T
    time = 1 + from_latent(lat[:, 0] + GROUP_TIME[group], TIME_CDF)
    labs = np.clip(np.rint(43.9 + 18.8 * (lat[:, 1] + GROUP_LABS[group])), 1, 132)
    labs = np.where(rng.random(m) < 0.03, 1.0, labs).astype(np.int64)
    procedures = from_latent(lat[:, 2] + GROUP_PROCEDURES[group], PROCEDURE_CDF)
    meds_latent = lat[:, 3] + GROUP_MEDICATIONS[group] + 0.5 * shift
    medications = np.clip(np.rint(np.exp(2.66 + 0.47 * meds_latent)), 1, 81).astype(np.int64)
    diag_latent = (lat[:, 4] + 0.3 * frailty + 0.25 * age_z) / np.sqrt(1.0 + 0.09 + 0.0625) - 0.1
    diagnoses = 1 + from_latent(diag_latent, DIAGNOSES_CDF)

    # Visits in the year before: a hidden-propensity Poisson part plus earlier encounters here.
    noise = rng.standard_normal((3, m))
    inpatient_rate = np.exp(INPATIENT_MU + 1.25 * frailty + 0.5 * noise[0] + 0.9 * shift)
    inpatient = rng.poisson(np.minimum(inpatient_rate, 8.0))
    inpatient = np.minimum(inpatient + recent, d130.COUNT_COLUMNS["number_inpatient"][1])
    emergency = rng.poisson(np.minimum(np.exp(EMERGENCY_MU + 0.8 * frailty + 1.4 * pat["emergency"][idx]
                                              + 0.45 * noise[1] + 0.5 * shift), 30.0))
    emergency = np.minimum(emergency, d130.COUNT_COLUMNS["number_emergency"][1])
    outpatient = rng.poisson(np.minimum(np.exp(OUTPATIENT_MU + 0.45 * frailty + 1.65 * pat["outpatient"][idx]
                                               + 0.4 * noise[2]), 30.0))
    outpatient = np.minimum(outpatient, d130.COUNT_COLUMNS["number_outpatient"][1])

    # Discharge: death/hospice (no later encounter, outcome NO) or a disposition by age and stay.
    death = rng.random(m) < expit(DEATH_INTERCEPT + 0.9 * age_z + 0.4 * frailty + 0.25 * lat[:, 0])
    alive_disp = DISCHARGE_IDS[draw(rng, DISCHARGE_CDF, band * 14 + (time - 1))]
    dead_disp = DEATH_IDS[draw(rng, DEATH_CDF, size=m)]
    discharge = np.where(death, dead_disp, alive_disp)

    # Laboratory tests and insulin, driven by the diabetes propensity.
    a1c_tested = rng.random(m) < expit(-1.75 + 1.0 * diab - 0.35 * age_z + 0.35 * dm + 1.4 * shift)
    a1c_level = 0.9 * dm - 0.35 * age_z + 0.5 * diab + 0.8 * rng.standard_normal(m)
    a1c = np.where(a1c_tested, 1 + (a1c_level > -0.2).astype(np.int64) + (a1c_level > 0.5), 0)
    glu_tested = rng.random(m) < GLUCOSE_TESTED_BY_TYPE[adm_type]
    glu_level = 0.7 * dm + 0.3 * diab + rng.standard_normal(m)
    glucose = np.where(glu_tested, 1 + (glu_level > 0.0).astype(np.int64) + (glu_level > 0.75), 0)
    on_insulin = rng.random(m) < expit(0.05 + 1.1 * diab - 0.3 * age_z + 0.7 * dm)
    dose_change = rng.random(m) < expit(-0.45 + 0.8 * diab + 0.3 * dm)
    up = rng.random(m) < 0.48
    insulin = np.where(on_insulin, np.where(dose_change, np.where(up, 2, 3), 1), 0)

    # Readmission outcome.
    score = (COEF_INPATIENT * np.log1p(inpatient) + COEF_EMERGENCY * np.log1p(emergency)
             + COEF_OUTPATIENT * np.minimum(np.log1p(outpatient), 1.2) + DISCHARGE_READMIT[discharge]
             + COEF_TIME * (np.minimum(time, 8) - 4.4) + COEF_MEDICATIONS * (medications - 16)
             + COEF_DIAGNOSES * (np.minimum(diagnoses, 9) - 7.4)
             + AGE_READMIT[band] + GROUP_READMIT[group] + INSULIN_READMIT[insulin] + A1C_READMIT[a1c])
    u = rng.random((3, m))
    lt30 = u[0] < expit(LT30_INTERCEPT + score + FRAILTY_LT30 * frailty)
    gt30 = u[1] < expit(GT30_INTERCEPT + 0.7 * score + FRAILTY_GT30 * frailty)
    readmitted = np.where(death, 0, np.where(lt30, 2, np.where(gt30, 1, 0)))
    follow = ~death & (u[2] < expit(NEXT_ENCOUNTER_LOGIT[readmitted] + FRAILTY_NEXT * frailty))
    gap = np.where(  # days from discharge to the next admission
        readmitted == 2,
        rng.uniform(1.0, 30.0, m),
        np.where(readmitted == 1, 30.0 + rng.exponential(200.0, m), 60.0 + rng.exponential(400.0, m)),
    )

    return {
        "patient": idx, "t": t, "band": band, "admission_type_id": adm_type + 1,
        "admission_source_id": adm_source, "discharge_disposition_id": discharge,
        "time_in_hospital": time, "num_lab_procedures": labs, "num_procedures": procedures,
        "num_medications": medications, "number_outpatient": outpatient,
        "number_emergency": emergency, "number_inpatient": inpatient, "diag_1": diag1,
        "number_diagnoses": diagnoses, "max_glu_serum": glucose, "A1Cresult": a1c,
        "insulin": insulin, "readmitted": readmitted, "group": group,
        "_follow": follow, "_next_t": t + time + gap,
    }


def simulate(
    rng: np.random.Generator, n_patients: int, shift: float
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Simulate every encounter of ``n_patients`` new patients; rows grouped by visit number."""
    pat = _new_patients(rng, n_patients, shift)
    idx = np.arange(n_patients)
    t = pat["t0"].copy()
    history = np.empty((n_patients, 0))
    blocks: list[dict[str, np.ndarray]] = []
    for visit in range(MAX_ENCOUNTERS_PER_PATIENT):
        recent = (history >= (t - 365.0)[:, None]).sum(axis=1)
        block = _admit(rng, pat, idx, t, recent, shift)
        blocks.append(block)
        follow = block.pop("_follow")
        next_t = block.pop("_next_t")
        if visit == MAX_ENCOUNTERS_PER_PATIENT - 1 or not follow.any():
            break
        history = np.concatenate([history[:, -24:], t[:, None]], axis=1)[follow]
        idx, t = idx[follow], next_t[follow]
    rows = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    rows["visit"] = np.concatenate([np.full(b["patient"].size, v) for v, b in enumerate(blocks)])
    return pat, rows
