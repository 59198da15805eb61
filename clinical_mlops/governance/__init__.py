"""Governance: the policy file (``governance/policy.yaml``) that every fairness gate, drift check,
promotion decision and incident record is judged by, loaded as one validated, hashed object
(:mod:`clinical_mlops.governance.policy`)."""

__all__ = ["policy"]
