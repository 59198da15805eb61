"""``clinical-mlops bench``: what the pipeline costs on this machine, measured, never assumed.

- :mod:`.bare` — the hand-written baseline: read the CSV, fit, predict.
- :mod:`.plain` — the whole readmission pipeline as one plain script over the domain library.
- :mod:`.orchestrated` — the same work as Dagster runs on a project instance.
- :mod:`.overhead` — Dagster's cost per asset step with the default (in-process) executor.
- :mod:`.scale` — every stage at 100k, 1M and 10M synthetic encounters, through the step
  functions the assets call.
- :mod:`.imports` — loading the Definitions; :mod:`.startup` — ``clinical-mlops --help`` and ``land`` of a
  small extract into a fresh workspace.
- :mod:`.run` — runs all of them side by side, each in its own process, and writes the report.

Every variant runs in a fresh child process so its wall time includes its imports and its
peak RSS is its own (``os.wait4``).
"""

__all__ = ["bare", "imports", "measure", "orchestrated", "overhead", "plain", "report", "run", "scale", "serving", "startup"]
