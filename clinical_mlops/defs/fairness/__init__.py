"""Fairness: audits, policy gates, root cause, mitigation and escalation."""

__all__ = ["assets", "sensors"]
