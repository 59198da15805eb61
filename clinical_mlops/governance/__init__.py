"""Governance: the policy file (``governance/policy.yaml``) that every fairness gate, drift check,
promotion decision and incident record is judged by, loaded as one validated, hashed object
(:mod:`clinical_mlops.governance.policy`), and the waivers named approvers record
when a blocking criterion lacks evidence (:mod:`clinical_mlops.governance.waivers`)."""

__all__ = ["policy", "waivers"]
