"""From simulated encounters to the 50 Diabetes 130 columns as text, and to CSV extracts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clinical_mlops.ingestion import diabetes130 as d130
from clinical_mlops.ingestion.synthetic._config import SubgroupBias, SyntheticConfig
from clinical_mlops.ingestion.synthetic._simulate import simulate
from clinical_mlops.ingestion.synthetic._tables import (
    CHANGE_WITHOUT_DOSE_CHANGE, DAYS, DIAG1_MISSING, DIAG2_CDF, DIAG2_MISSING, DIAG3_CDF, DIAG3_MISSING,
    ICD_CODES, MEDS_OTHER, MED_CDFS, PAYER_CDF, PAYER_VALUES, RACE_VALUES, SPECIALTY_CDF,
    SPECIALTY_VALUES, WEIGHT_CDF, WEIGHT_RECORDED, draw,
)

__all__ = ["generate_encounters", "write_synthetic_csv", "write_synthetic_extracts"]

_INT_STR = np.array([str(i) for i in range(256)], dtype=object)
_CSV_CHUNK_ROWS = 100_000
_CHUNK_STREAM = 0xC4C4  # domain separator of the per-chunk random streams


def _int_strings(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64)
    if values.size and 0 <= values.min() and values.max() < _INT_STR.size:
        return _INT_STR[values]
    return np.array(list(map(str, values.tolist())), dtype=object)


def _bias_mask(bias: SubgroupBias, race: np.ndarray, gender: np.ndarray, band: np.ndarray) -> np.ndarray:
    if bias.attribute == "race":
        return race == RACE_VALUES.index(bias.group)
    if bias.attribute == "gender":
        return gender == d130.GENDERS.index(bias.group)
    return band == d130.AGE_BANDS.index(bias.group)


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({c: np.array([], dtype=object) for c in d130.COLUMNS}, columns=list(d130.COLUMNS))


def generate_encounters(config: SyntheticConfig, *, patient_offset: int = 0) -> pd.DataFrame:
    """Synthetic encounters: all 50 Diabetes 130 columns as ``str``, ordered by encounter_id.

    ``patient_offset`` is added to every patient number: a later batch (``first_encounter_id``
    after the earlier batch's last) then shares no patient with it.
    """
    return _generate(config, patient_offset=patient_offset)[0]


def _generate(
    config: SyntheticConfig, *, chunk: int | None = None, patient_offset: int = 0
) -> tuple[pd.DataFrame, int, int]:
    """The frame, its last encounter_id and its largest patient_nbr.

    ``chunk`` (for :func:`write_synthetic_extracts`) derives the random streams from
    ``(seed, chunk)``; ``patient_offset`` is added to every patient number.
    """
    n = int(config.n_encounters)
    if n == 0:
        return _empty_frame(), int(config.first_encounter_id) - 1, patient_offset
    entropy = int(config.seed) if chunk is None else [int(config.seed), _CHUNK_STREAM, int(chunk)]
    rng = np.random.default_rng(entropy)
    shift = float(config.shift.strength)

    # Simulate whole patient histories until there are enough encounters, then keep the first n
    # (the last patient kept may lose the tail of their history).
    pats: list[dict[str, np.ndarray]] = []
    rowsets: list[dict[str, np.ndarray]] = []
    n_patients = total = 0
    while total < n:
        batch = int((n - total) / 1.3) + 64
        pat, rows = simulate(rng, batch, shift)
        rows["patient"] = rows["patient"] + n_patients
        pats.append(pat)
        rowsets.append(rows)
        n_patients += batch
        total += rows["patient"].size
    pat = {k: np.concatenate([p[k] for p in pats]) for k in pats[0]}
    rows = {k: np.concatenate([r[k] for r in rowsets]) for k in rowsets[0]}
    per_patient = np.bincount(rows["patient"], minlength=n_patients)
    before = np.cumsum(per_patient) - per_patient
    keep_visits = np.clip(n - before, 0, per_patient)
    keep = rows["visit"] < keep_visits[rows["patient"]]
    order = np.flatnonzero(keep)
    order = order[np.argsort(rows["t"][order], kind="stable")]  # encounter_id follows time
    rows = {k: v[order] for k, v in rows.items()}
    patient = rows["patient"]
    band = rows["band"]
    group = rows["group"]

    # Columns that do not feed the outcome, drawn for the kept rows only.
    weight_recorded = rng.random(n) < WEIGHT_RECORDED
    weight = np.where(weight_recorded, draw(rng, WEIGHT_CDF, size=n), -1)
    payer = draw(rng, PAYER_CDF, np.where(band < 4, 0, np.where(band < 6, 1, 2)))
    specialty = draw(rng, SPECIALTY_CDF, group)
    diag2 = draw(rng, DIAG2_CDF, size=n)
    diag3 = draw(rng, DIAG3_CDF, size=n)
    diagnoses = rows["number_diagnoses"]
    diag_missing = rng.random((3, n))
    diag1_missing = diag_missing[0] < DIAG1_MISSING
    diag2_missing = (diagnoses < 2) | (diag_missing[1] < DIAG2_MISSING)
    diag3_missing = (diagnoses < 3) | (diag_missing[2] < DIAG3_MISSING)
    meds = {m: draw(rng, MED_CDFS[m], size=n) for m in MEDS_OTHER}
    meds["insulin"] = rows["insulin"]
    dose_changed = np.zeros(n, dtype=bool)
    on_medication = np.zeros(n, dtype=bool)
    for states in meds.values():
        dose_changed |= states >= 2
        on_medication |= states > 0
    change = dose_changed | (on_medication & (rng.random(n) < CHANGE_WITHOUT_DOSE_CHANGE))

    # Identifiers: encounter_id increases with admission time; patient_nbr loosely with entry.
    gaps = np.maximum(1, np.rint(np.exp(rng.normal(7.0, 1.5, n)))).astype(np.int64)
    gaps[0] = 0
    encounter_id = int(config.first_encounter_id) + np.cumsum(gaps)
    kept_patients, patient_pos = np.unique(patient, return_inverse=True)
    n_kept = kept_patients.size
    numbers = 135 + np.cumsum(rng.integers(1, 5300, n_kept))
    entry_key = pat["t0"][kept_patients] / DAYS + rng.normal(0.0, 0.35, n_kept)
    patient_nbr = np.empty(n_kept, dtype=np.int64)
    patient_nbr[np.argsort(entry_key, kind="stable")] = numbers
    patient_nbr = patient_nbr[patient_pos] + int(patient_offset)

    race = pat["race"][patient]
    gender = pat["gender"][patient]
    readmitted = rows["readmitted"].copy()
    a1c = rows["A1Cresult"].copy()
    glucose = rows["max_glu_serum"].copy()
    if config.bias is not None:
        # Own random stream, so rows outside the group are identical to the unbiased output.
        brng = np.random.default_rng([int(config.seed), 0xB1A5] + ([] if chunk is None else [int(chunk)]))
        u = brng.random((5, n))  # row-major: the first four rows are the same draws as before
        in_group = _bias_mask(config.bias, race, gender, band)
        readmitted[in_group & (readmitted == 2) & (u[0] < config.bias.label_flip_rate)] = 0
        a1c[in_group & (u[1] < config.bias.measurement_missing_rate)] = 0
        glucose[in_group & (u[2] < config.bias.measurement_missing_rate)] = 0
        hidden = in_group & (u[3] < config.bias.utilisation_undercount_rate)
        if hidden.any():
            rows = dict(rows)
            for column in ("number_inpatient", "number_emergency", "number_outpatient"):
                rows[column] = np.where(hidden, 0, rows[column])
        if config.bias.documentation_undercount_rate > 0:  # its own stream: the draws above stay the same
            drng = np.random.default_rng([int(config.seed), 0xD0C5] + ([] if chunk is None else [int(chunk)]))
            halved = in_group & (drng.random(n) < config.bias.documentation_undercount_rate)
            rows = dict(rows)
            for column in ("num_lab_procedures", "num_medications"):
                rows[column] = np.where(halved, np.maximum(1, rows[column] // 2), rows[column])
        unlinked = in_group & (u[4] < config.bias.history_unlinked_rate)
        if unlinked.any():  # a patient number of its own, above every linked one
            patient_nbr = patient_nbr.copy()
            patient_nbr[unlinked] = int(patient_nbr.max()) + 1 + np.arange(int(unlinked.sum()))

    def pick(values: tuple[str, ...] | np.ndarray, codes: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=object)[codes]

    missing = d130.MISSING
    out: dict[str, np.ndarray] = {
        "encounter_id": _int_strings(encounter_id),
        "patient_nbr": _int_strings(patient_nbr),
        "race": pick(RACE_VALUES, race),
        "gender": pick(d130.GENDERS, gender),
        "age": pick(d130.AGE_BANDS, band),
        "weight": pick((*d130.WEIGHT_BANDS, missing), weight),  # -1 -> "?"
        "admission_type_id": _int_strings(rows["admission_type_id"]),
        "discharge_disposition_id": _int_strings(rows["discharge_disposition_id"]),
        "admission_source_id": _int_strings(rows["admission_source_id"]),
        "payer_code": pick(PAYER_VALUES, payer),
        "medical_specialty": SPECIALTY_VALUES[specialty],
        "diag_1": np.where(diag1_missing, missing, ICD_CODES[rows["diag_1"]]),
        "diag_2": np.where(diag2_missing, missing, ICD_CODES[diag2]),
        "diag_3": np.where(diag3_missing, missing, ICD_CODES[diag3]),
        "max_glu_serum": pick(d130.GLUCOSE_RESULTS, glucose),
        "A1Cresult": pick(d130.A1C_RESULTS, a1c),
        "change": pick(d130.CHANGE_VALUES, change.astype(np.int64)),
        "diabetesMed": pick(d130.YES_NO, (~on_medication).astype(np.int64)),
        "readmitted": pick(d130.READMITTED_VALUES, readmitted),
    }
    for column in d130.COUNT_COLUMNS:
        out[column] = _int_strings(rows[column])
    for med in d130.MEDICATIONS:
        out[med] = pick(d130.MEDICATION_STATES, meds[med])
    for column in ("diag_1", "diag_2", "diag_3"):
        out[column] = out[column].astype(object)
    frame = pd.DataFrame({c: out[c] for c in d130.COLUMNS}, columns=list(d130.COLUMNS))
    return frame, int(encounter_id[-1]), int(patient_nbr.max())


def _write_rows(handle, frame: pd.DataFrame) -> None:
    """Append ``frame``'s rows as CSV lines (no value needs quoting: ``_tables`` checks every vocabulary)."""
    columns = [frame[c].to_numpy() for c in frame.columns]
    for start in range(0, len(frame), _CSV_CHUNK_ROWS):
        chunk = [col[start:start + _CSV_CHUNK_ROWS] for col in columns]
        handle.write("".join([",".join(row) + "\n" for row in zip(*chunk)]))


def write_synthetic_csv(config: SyntheticConfig, path: Path) -> Path:
    """Write :func:`generate_encounters` output as CSV ("\\n" line ends, no index); returns ``path``.

    No generated value contains a comma, quote or newline, so rows are joined directly (the
    bytes equal ``DataFrame.to_csv(index=False, lineterminator="\\n")``, several times faster).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = generate_encounters(config)
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(",".join(frame.columns) + "\n")
        _write_rows(handle, frame)
    return path


def write_synthetic_extracts(
    config: SyntheticConfig,
    directory: Path,
    *,
    rows_per_extract: int = 1_000_000,
    chunk_rows: int = 250_000,
    prefix: str = "synthetic_",
) -> list[Path]:
    """Write ``config.n_encounters`` encounters as extract CSVs of ``rows_per_extract`` rows each.

    Generated ``chunk_rows`` at a time, so memory is bounded by the chunk, not by the total.
    Chunk *k* draws from its own random streams, derived from ``(config.seed, k)``, and is a
    population of its own patients: its encounter ids start after the previous chunk's last
    id and its patient numbers above the previous chunk's largest, so no id repeats across
    chunks or extracts. Deterministic for a given config and sizes. Files are named
    ``<prefix><nnn>.csv`` (arrival order) and returned in that order.
    """
    if rows_per_extract < 1 or chunk_rows < 1:
        raise ValueError("rows_per_extract and chunk_rows must be >= 1")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    total = int(config.n_encounters)
    n_files = max(1, -(-total // rows_per_extract))
    width = max(3, len(str(n_files)))
    header = ",".join(d130.COLUMNS) + "\n"
    next_id, patient_offset, chunk = int(config.first_encounter_id), 0, 0
    paths: list[Path] = []
    for index in range(n_files):
        path = directory / f"{prefix}{index + 1:0{width}d}.csv"
        in_file = min(rows_per_extract, total - index * rows_per_extract)
        with path.open("w", encoding="utf-8", newline="") as handle:
            handle.write(header)
            written = 0
            while written < in_file:
                size = min(chunk_rows, in_file - written)
                part = SyntheticConfig(
                    n_encounters=size, seed=config.seed, shift=config.shift, bias=config.bias,
                    first_encounter_id=next_id,
                )
                frame, last_id, max_patient = _generate(part, chunk=chunk, patient_offset=patient_offset)
                _write_rows(handle, frame)
                next_id, patient_offset, chunk = last_id + 1, max_patient, chunk + 1
                written += size
                del frame
        paths.append(path)
    return paths
