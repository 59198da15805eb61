"""Scoring: batch predictions with the champion."""
