"""The model registry and its gate: MLflow aliases with an append-only history of every move
(:mod:`aliases`), and change control — a challenger against the champion on the same held-out data,
under the governance policy, ending in the promotion decision (:mod:`change_control`). What each of its assets does is one function in :mod:`.steps`."""

__all__ = ["aliases", "change_control", "steps"]
