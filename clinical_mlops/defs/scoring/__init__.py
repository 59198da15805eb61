"""Scoring: batch predictions with the champion, and the scoring service's resources."""
