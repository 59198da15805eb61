"""Monitoring in production: outcomes joined to predictions, performance, fairness and skew over time, incidents.

:mod:`.dashboard` publishes the windows to Evidently's UI and a static page beside it;
:mod:`.production` joins delayed outcomes to served and batch predictions and computes
performance, fairness and training–serving skew from them; :mod:`.estimation` estimates performance and fairness per
window and per group before the labels arrive, and sets the realised figures beside it; :mod:`.incidents` records what a
failing blocking gate opens (owner, deadline, evidence) and every status change; :mod:`.settings` holds the
monitoring defaults, each defined once. Wired by
``clinical_mlops/defs/monitoring``.
What each of its assets does is one function in :mod:`.steps`."""

__all__ = ["dashboard", "estimation", "incidents", "production", "settings", "steps"]
