"""Fairness of a model version: the subgroup audit with bootstrap intervals and policy verdicts
(:mod:`audit`), its report pages (:mod:`report`, Markdown rendered to HTML, figures from :mod:`plots`),
the root-cause analysis of a failing gap (:mod:`root_cause`), the mitigations compared against the
policy (:mod:`mitigation`) and the governance document generated from the policy
(:mod:`governance_document`). What each of its assets does is one function in :mod:`.steps`; the
asset checks it returns are judged in :mod:`.rule_checks`."""

__all__ = ["audit", "governance_document", "mitigation", "plots", "reduction_oracle", "report", "root_cause",
           "rule_checks", "steps"]
