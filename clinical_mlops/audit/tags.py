"""The MLflow model-version tags that bind a version to its model card and TRIPOD+AI report, as plain
names (the Definitions read them when they load; :mod:`.model_card` re-exports them)."""

from __future__ import annotations

__all__ = ["TAG_CARD", "TAG_TRIPOD"]

TAG_CARD = "model_card_sha256"
"""MLflow model-version tag holding the sha256 of the card's Markdown."""
TAG_TRIPOD = "tripod_report_sha256"
"""MLflow model-version tag holding the sha256 of the TRIPOD+AI report's Markdown."""
