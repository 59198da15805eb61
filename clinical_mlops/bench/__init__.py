"""``clinical-mlops bench``: what the pipeline costs on this machine, measured, never assumed.

- :mod:`.bare` — the like-for-like bare script (the yardstick): the cohort's SQL over the CSVs, the
  product's split rule, the candidate's pipeline; no governance.
- :mod:`.naive` — the earlier, not like-for-like "bare" script (raw columns, no exclusions).
- :mod:`.orchestrated` — the readmission graph land → evaluation as Dagster runs.
- :mod:`.plain` — the readmission pipeline as one plain script over the steps, without Dagster.
- :mod:`.compare` — the bare script and the graph alternated, the naive script, the whole demo.
- :mod:`.overhead` — Dagster's cost per asset step; :mod:`.imports` — loading the Definitions;
  :mod:`.startup` — ``clinical-mlops --help`` and ``land`` of a small extract into a fresh workspace;
  :mod:`.serving` — the scoring service beside ``mlflow models serve`` on the same model.
- :mod:`.scale` — every stage at 100k, 1M and 10M synthetic encounters beside a plain DuckDB scan.
- :mod:`.targets` — issue 16's targets as one table of ratios measured in the same run.
- :mod:`.run` — runs them side by side, each in its own process, and writes the report (:mod:`.report`).

Every variant runs in a fresh child process so its wall time includes its imports and its
peak RSS is its own (:mod:`.measure`).
"""

__all__ = ["bare", "compare", "imports", "measure", "naive", "orchestrated", "overhead", "plain", "report", "run",
           "scale", "serving", "startup", "targets"]
