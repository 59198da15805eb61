"""Production monitoring: prediction log ingestion, label join, performance, fairness and skew."""

__all__ = ["assets"]
