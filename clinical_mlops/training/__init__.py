"""Training: the model families and their default hyperparameters (:mod:`.modelling`), the fit that
tracks, registers and scores one model (:mod:`.fit`), permutation importance scored in few predictions
(:mod:`.importance`), the hyperparameters and sample defaults as plain values (:mod:`.params`), and what the training assets do (:mod:`.steps`)."""

__all__ = ["fit", "importance", "modelling", "params", "steps"]
