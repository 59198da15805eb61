"""Scoring: batch predictions with the champion."""

__all__ = ["assets"]
