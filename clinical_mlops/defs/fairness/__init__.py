"""Fairness: audits, policy gates, root cause, mitigation and escalation."""
