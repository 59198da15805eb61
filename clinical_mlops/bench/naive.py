"""The naive baseline (the benchmark's "bare script" before issue 16): NOT like for like.

Read 20 raw columns of the extracts (race and gender among them), no exclusions, no derived
features, a patient split by a hash of the raw id; fit HistGradientBoosting with the candidate's
hyperparameters; predict. Kept beside :mod:`.bare` (the like-for-like script, the yardstick) so
the report shows what the earlier "8.3x" compared. Run as
``python -m clinical_mlops.bench.naive --result out.json extract.csv [...]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["CATEGORICAL", "NUMERIC", "main"]

NUMERIC = [
    "time_in_hospital", "num_lab_procedures", "num_procedures", "num_medications",
    "number_outpatient", "number_emergency", "number_inpatient", "number_diagnoses",
]
CATEGORICAL = [
    "race", "gender", "age", "admission_type_id", "discharge_disposition_id", "admission_source_id",
    "medical_specialty", "max_glu_serum", "A1Cresult", "insulin", "change", "diabetesMed",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("extracts", nargs="+", type=Path)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=None, help="default: the candidate's seed")
    args = parser.parse_args(argv)

    import numpy as np
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    from clinical_mlops.training.modelling import GradientBoostingParams

    params = GradientBoostingParams()

    frame = pd.concat(
        [pd.read_csv(p, usecols=["patient_nbr", "readmitted", *NUMERIC, *CATEGORICAL], dtype=str,
                     keep_default_na=False) for p in args.extracts],
        ignore_index=True,
    )
    x = pd.DataFrame({c: pd.to_numeric(frame[c], errors="coerce") for c in NUMERIC})
    for c in CATEGORICAL:
        x[c] = frame[c].astype("category")
    y = (frame["readmitted"] == "<30").astype(int).to_numpy()
    patient = pd.util.hash_pandas_object(frame["patient_nbr"], index=False).to_numpy()
    test = (patient % 10_000) < 2_000
    model = HistGradientBoostingClassifier(
        max_iter=params.max_iter, learning_rate=params.learning_rate, max_leaf_nodes=params.max_leaf_nodes,
        min_samples_leaf=params.min_samples_leaf, l2_regularization=params.l2_regularization,
        categorical_features="from_dtype", early_stopping=False,
        random_state=params.seed if args.seed is None else args.seed,
    )
    model.fit(x[~test], y[~test])
    scores = model.predict_proba(x[test])[:, 1]
    args.result.write_text(json.dumps({
        "rows": int(len(frame)), "train_rows": int((~test).sum()), "test_rows": int(test.sum()),
        "test_auroc": round(float(roc_auc_score(y[test], scores)), 4),
        "scores_mean": round(float(np.mean(scores)), 6),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
