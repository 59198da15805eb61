"""The ledger segment of a bundle: this model's entries, the contiguous chain up to the head, the trail."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import duckdb

from clinical_mlops.audit import bundle_verifier, events as audit_events, ledger, lineage
from clinical_mlops.audit.bundle._pieces import BundleFolder
from clinical_mlops.core.reporting import canonical_json

__all__ = ["TRAIL_COLUMNS", "relevant_entries", "write_ledger_segment"]

TRAIL_COLUMNS = ("seq", "ts", "actor", "event_type", "subject", "natural_key", "payload_sha256", "prev_hash",
                 "hash", "payload_json")


def relevant_entries(ledger_path: Path, record: lineage.ModelLineage) -> set[int]:
    """Seqs of the entries about this model: its runs' materializations, its records, their amendments."""
    name, version, cohort, role = record.model_name, record.model_version, record.cohort, record.role
    extracts = {e.extract_id for e in record.extracts}
    partitioned = lineage.partitioned_assets(record.source)
    label = f"{name} v{version}"
    runs: set[str] = set()
    for entry in ledger.read_entries(ledger_path):
        if entry.event_type != audit_events.EVENT_MATERIALIZATION:
            continue
        payload, metadata = entry.payload, entry.payload.get("metadata") or {}
        asset = payload.get("asset_key") or ""
        if (metadata.get("registered_model") == name and str(metadata.get("model_version")) == version) \
                or (asset in partitioned and payload.get("partition") in extracts) \
                or (asset.startswith(f"{cohort}/") and metadata.get(f"{role}_model") == label):
            runs.add(payload.get("run_id"))
    relevant: set[int] = set()
    for entry in ledger.read_entries(ledger_path):
        payload = entry.payload
        asset = payload.get("asset_key")
        in_run = payload.get("run_id") in runs and (
            asset is None or asset.startswith(f"{cohort}/")
            or (asset in partitioned and payload.get("partition") in extracts)
        )
        about_model = (
            entry.subject in (f"model:{name}/{version}", f"model:{name}")
            or payload.get("mlflow_run_id") == record.mlflow_run_id
            or (payload.get("model_name") == name and str(payload.get("model_version")) == version)
        )
        amends = entry.event_type == "amendment" and payload.get("amends_seq") in relevant
        if in_run or about_model or amends:
            relevant.add(entry.seq)
    return relevant


def write_ledger_segment(
    bundle: BundleFolder, ledger_path: Path, record: lineage.ModelLineage, con: duckdb.DuckDBPyConnection
) -> tuple[bool, int, dict[str, Any]]:
    """The contiguous segment from this model's first entry to the head, its verification, and ``trail.csv``.

    Returns (ledger and segment verify, entries in the trail, verification details).
    """
    full = ledger.verify(ledger_path, con=con)
    relevant = relevant_entries(ledger_path, record) if ledger_path.exists() else set()
    head = ledger.read_head(ledger_path)
    start = min(relevant) if relevant else None
    segment_info: dict[str, Any] = {"start_seq": start, "end_seq": head["seq"] if head else None,
                                    "entries_about_this_model": len(relevant)}
    trail_rows = []
    if start is not None and head is not None:
        with open(ledger_path, "rb") as source, open(bundle.path("ledger/segment.jsonl"), "wb") as target:
            for number, line in enumerate(source, 1):
                if number > head["seq"]:
                    break
                if number >= start:
                    target.write(line)
        bundle.json("ledger/head.json", head)
        for entry in ledger.read_entries(ledger_path, start=start, end=head["seq"]):
            if entry.seq in relevant:
                trail_rows.append([
                    entry.seq, entry.ts, entry.actor, entry.event_type, entry.subject, entry.natural_key or "",
                    entry.payload_sha256, entry.prev_hash, entry.hash, canonical_json(entry.payload),
                ])
        ok, count, message = bundle_verifier.verify_segment(bundle.root / "ledger" / "segment.jsonl", head,
                                                            ledger.signing_key())
        segment_info.update({"ok": ok, "entries": count, "message": message})
    else:
        segment_info.update({"ok": False, "entries": 0, "message": "no ledger entry about this model"})
        bundle.absent.append("ledger segment: the ledger holds no entry about this model")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TRAIL_COLUMNS)
    writer.writerows(trail_rows)
    bundle.text("trail.csv", buffer.getvalue())
    bundle.json("ledger/verification.json", {"ledger": full.as_dict(), "segment": segment_info})
    return full.ok and bool(segment_info.get("ok")), len(trail_rows), {"full": full, "segment": segment_info}
