"""Training: the model families and their default hyperparameters (:mod:`.modelling`), the fit that
tracks, registers and scores one model (:mod:`.fit`), the hyperparameters and sample defaults as plain values (:mod:`.params`), and what the training assets do (:mod:`.steps`)."""

__all__ = ["fit", "modelling", "params", "steps"]
