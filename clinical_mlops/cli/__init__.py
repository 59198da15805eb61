"""The ``clinical-mlops`` command (:mod:`.main`, entry point ``main``) and its command groups —
audit, bench, the demo (:mod:`.demo`, its extracts :mod:`.demo_extracts`), the pipeline on landed extracts
(:mod:`.pipeline`: sources, land, run; checked first by :mod:`.preflight`), fairness and governance, registry, serving, source contracts (:mod:`.sources`) — plus the run launcher that starts
the asset graph as Dagster runs (:mod:`.runs`) and the one-line messages for known failures
(:mod:`.errors`). The library behind a command is imported when the command runs, so
``clinical-mlops --help`` stays fast."""

__all__ = ["audit", "bench", "demo", "demo_extracts", "demo_windows", "errors", "fairness", "main", "pipeline", "preflight", "registry", "runs",
           "serving", "sources"]
