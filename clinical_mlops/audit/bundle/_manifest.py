"""The privacy guard, the manifest and the index page of a bundle."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pandas as pd

from clinical_mlops.audit import bundle_verifier, ledger, lineage, model_card
from clinical_mlops.audit.bundle._pieces import BundleFolder
from clinical_mlops.core import reporting

__all__ = ["assert_no_patient_rows", "write_index", "write_manifest"]

def _json_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return {str(k).lower() for k in value} | set().union(*(_json_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_json_keys(v) for v in value)) if value else set()
    return set()


def assert_no_patient_rows(root: Path) -> None:
    """Refuse the export if any CSV, JSON or JSONL file has an identifier column or key."""
    for path in root.rglob("*"):
        if path.suffix == ".csv":
            with open(path, encoding="utf-8") as fh:
                header = {c.strip().lower() for c in next(csv.reader(fh), [])}
            bad = header & ledger.FORBIDDEN_KEYS
        elif path.suffix == ".json":
            bad = _json_keys(json.loads(path.read_text(encoding="utf-8"))) & ledger.FORBIDDEN_KEYS
        elif path.suffix == ".jsonl":
            bad = set()
            for line in path.read_text(encoding="utf-8").splitlines():
                bad |= _json_keys(json.loads(line)) & ledger.FORBIDDEN_KEYS
        else:
            continue
        if bad:
            raise RuntimeError(f"bundle file {path.relative_to(root)} has identifier fields {sorted(bad)}; not exported")


def write_manifest(root: Path, meta: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    """Write ``manifest.json`` (sha256 and size of every file) and ``manifest.sha256``; returns its digest and files."""
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in bundle_verifier.NOT_IN_MANIFEST:
            files[rel] = {"sha256": bundle_verifier.sha256_file(path), "bytes": path.stat().st_size}
    manifest = {"bundle": meta, "files": files}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    digest = bundle_verifier.sha256_file(root / "manifest.json")
    (root / "manifest.sha256").write_text(f"{digest}  manifest.json\n", encoding="utf-8")
    return digest, files


def _metric_line(evaluation: pd.DataFrame, metric: str) -> str:
    rows = evaluation[(evaluation["attribute"] == "overall") & (evaluation["metric"] == metric)]
    if rows.empty:
        return "—"
    latest = rows.sort_values("evaluated_at").iloc[-1]
    return model_card.with_ci(latest["estimate"], latest["lower"], latest["upper"])


def write_index(bundle: BundleFolder, record: lineage.ModelLineage, evaluation: pd.DataFrame, ledger_info: dict[str, Any],
                card: model_card.ModelCard, card_note: str, replay_report: Any | None, trail_entries: int) -> None:
    """``index.md`` and ``index.html``: what the bundle holds and what it says, for a human reader."""
    full, segment = ledger_info["full"], ledger_info["segment"]
    lines = [
        f"# Audit bundle: {record.model_name} v{record.model_version}",
        "",
        "> Everything that produced this model version. Verify offline with `python verify_bundle.py` (checks every "
        "file against `manifest.json` and the ledger segment's hash chain up to the signed head).",
        "",
        "## Summary",
        "",
        "| | |",
        "|---|---|",
        f"| model | `{record.model_name}` version {record.model_version} ({record.role}, cohort `{record.cohort}`) |",
        f"| registered (UTC) | {record.registered_at[:19]} |",
        f"| algorithm | {record.algorithm} |",
        f"| MLflow run | `{record.mlflow_run_id}` |",
        f"| git commit | `{record.git_commit}`{' (dirty)' if record.git_dirty else ''} |",
        f"| uv.lock sha256 | `{record.lock_sha256}` |",
        f"| cohort spec sha256 | `{record.cohort_spec_sha256}` |",
        f"| train / test rows | {record.train_rows:,} / {record.test_rows:,} |",
        f"| test AUROC (95% CI) | {_metric_line(evaluation, 'auroc')} |",
        f"| test Brier (95% CI) | {_metric_line(evaluation, 'brier')} |",
        f"| operating threshold | {record.operating_threshold:.5f} |",
        f"| model card sha256 | `{card.sha256}` |",
        f"| ledger | {full.summary()} |",
        f"| ledger segment | entries {segment.get('start_seq')}–{segment.get('end_seq')}: {segment.get('message')} |",
        f"| audit trail | {trail_entries} entries about this model (`trail.csv`) |",
    ]
    if replay_report is not None:
        lines.append(f"| replay | {'IDENTICAL' if replay_report.identical else 'DIFFERS'} — see `replay.md` |")
    lines += ["", "## Input extracts (data versions)", "", *model_card.extract_table(record), "",
              "## Hyperparameters", "", "| parameter | value |", "|---|---|",
              *[f"| {k} | {v} |" for k, v in sorted(record.params.items())], ""]
    if card_note:
        lines += [f"Model card: {card_note}", ""]
    lines += ["## Included", "", *[f"- {item}" for item in bundle.included], "",
              "## Not included, and why", "", *([f"- {item}" for item in bundle.absent] or ["- nothing"]), "",
              "## Files", "", "See `manifest.json` for the sha256 of every file.", ""]
    text = "\n".join(lines)
    bundle.text("index.md", text)
    bundle.text("index.html", reporting.page(text, f"Audit bundle — {record.model_name} v{record.model_version}"))
