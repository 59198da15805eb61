"""The like-for-like bare script: what a data scientist writes for the same candidate, and nothing more.

The same work as ``<source>_readmission_30d`` from landing to the candidate's test AUROC, minus the
governance: no landing record, no validation or quarantine, no feature-schema check, no MLflow
tracking or registry, no evaluation CIs, fairness, drift or audit ledger, nothing written to a
warehouse. What it does:

1. read the extract CSVs in DuckDB (in memory) and type their columns as the source contract says
   (the ``"?"`` missing token becomes NULL);
2. run the cohort's own SQL over them (``cohorts/<base>.sql``, then the cohort's SQL if any), drop
   the cohort's exclusions and compute its label, as ``features.<cohort>`` is built;
3. split by the product's rule: a seeded hash of the patient's key, 20 % of patients to test
   (the key is the same keyed hash of ``patient_nbr`` the product uses, so both split the same
   patients the same way and their AUROCs compare);
4. fit the candidate's pipeline (:func:`~clinical_mlops.training.modelling.build_gradient_boosting`:
   ordinal-encoded categoricals, HistGradientBoosting with
   :class:`~clinical_mlops.training.modelling.GradientBoostingParams`' defaults) on the training side,
   predict the test side, report the AUROC.

It reads the cohort's SQL from its spec rather than calling :mod:`clinical_mlops.features.build`,
so it does not import Pandera; ``clinical_mlops_tests/bench/test_bare.py`` checks it gives the same
rows, split and AUROC (within 0.005) as the product's steps. Run as
``python -m clinical_mlops.bench.bare --result out.json [--source NAME] extract.csv [...]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

__all__ = ["BUCKETS", "SOURCE", "cohort_query", "main", "run"]

SOURCE = "synthetic_diabetes130"
BUCKETS = 10_000
"""The split's hash buckets, as :func:`clinical_mlops.features.build.assign_split` cuts them."""


def _csv_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def cohort_query(spec, key: bytes, paths: list[Path]) -> str:
    """SQL giving one row per cohort encounter: ``split`` ('train'/'test'), the features and ``label``.

    The SQL embeds literals derived from ``key``: never log it.
    """
    from clinical_mlops.sources import contract, tables

    typed = tables.typed_select(contract.load_source(spec.source).contract, key)
    base = spec.base_sql if not spec.cohort_sql else f"WITH cohort_base AS ({spec.base_sql})\n{spec.cohort_sql}"
    excluded = " OR ".join(f"({e.sql})" for e in spec.exclusions) or "FALSE"
    cut = int(round(spec.test_fraction * BUCKETS))
    columns = ", ".join(f'"{c}"' for c in spec.features)
    return f"""WITH r AS (
        SELECT regexp_extract(filename, '[^/]+$') AS _extract_id,
               row_number() OVER (PARTITION BY filename) AS _row_number, * EXCLUDE (filename)
        FROM read_csv({_csv_list(paths)}, all_varchar = true, header = true, filename = true)
    ), source_rows AS (SELECT {typed} FROM r),
    cohort AS ({base})
    SELECT CASE WHEN md5_number('{spec.split_seed}' || ':' || patient_key) % {BUCKETS} < {cut}
                THEN 'test' ELSE 'train' END AS split,
           {columns}, CAST(({spec.target_sql}) AS INTEGER) AS label
    FROM cohort WHERE NOT ({excluded}) ORDER BY encounter_id"""


def run(extracts: list[Path], source: str = SOURCE, cohort: str = "readmission_30d") -> dict:
    """Read, build, split, fit, predict; return counts, the test AUROC and seconds by phase (no rows)."""
    clock = [time.perf_counter()]
    seconds: dict[str, float] = {}

    def lap(name: str) -> None:
        now = time.perf_counter()
        seconds[name] = round(now - clock[0], 3)
        clock[0] = now

    import duckdb
    from sklearn.metrics import roc_auc_score

    from clinical_mlops.features.cohort import load_cohort
    from clinical_mlops.ingestion import deid
    from clinical_mlops.training import modelling

    lap("imports")
    spec = load_cohort(f"{source}_{cohort}")
    key, _ = deid.pseudonym_key_from_env()
    with duckdb.connect() as con:
        frame = con.execute(cohort_query(spec, key, extracts)).df()
    lap("read_and_features")
    train, test = frame[frame["split"] == "train"], frame[frame["split"] == "test"]
    pipeline = modelling.fit(modelling.build_gradient_boosting(spec, modelling.GradientBoostingParams()), train, spec)
    lap("fit")
    scores = modelling.predict_risk(pipeline, test, spec)
    auroc = float(roc_auc_score(test["label"].to_numpy(), scores))
    lap("predict")
    return {"rows": int(len(frame)), "train_rows": int(len(train)), "test_rows": int(len(test)),
            "positives": int(frame["label"].sum()), "test_auroc": round(auroc, 4), "seconds_by_phase": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("extracts", nargs="+", type=Path)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--source", default=SOURCE, help=f"the source contract the extracts follow (default {SOURCE})")
    args = parser.parse_args(argv)
    args.result.write_text(json.dumps(run(args.extracts, args.source)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
