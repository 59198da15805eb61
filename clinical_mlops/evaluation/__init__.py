"""Evaluation of registered models on held-out data: metrics with bootstrap CIs, overall and per subgroup
(:mod:`metrics`, plain numpy/pandas/matplotlib), and the evaluation of a registered version from the
warehouse into ``ml.evaluation_metrics`` (:mod:`models`), and the external evaluation of a model on a later or
other-site extract into ``ml.external_evaluations`` (:mod:`external`). What each of its assets does is one function in :mod:`.steps`; its defaults and check names are plain values in
:mod:`.settings`."""

__all__ = ["external", "metrics", "models", "settings", "steps"]
