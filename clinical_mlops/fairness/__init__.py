"""Fairness of a model version: the subgroup audit with bootstrap intervals and policy verdicts
(:mod:`audit`), its HTML report (:mod:`report`), the root-cause analysis of a failing gap
(:mod:`root_cause`) and the mitigations compared against the policy (:mod:`mitigation`). What each of its assets does is one function in :mod:`.steps`."""

__all__ = ["audit", "mitigation", "reduction_oracle", "report", "root_cause", "steps"]
