"""Exporting a bundle, and verifying one."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from clinical_mlops.audit import bundle_verifier, events as audit_events, ledger, lineage, model_card
from clinical_mlops.audit import replay as replay_module
from clinical_mlops.audit.bundle._manifest import assert_no_patient_rows, write_index, write_manifest
from clinical_mlops.audit.bundle._pieces import (
    BundleFolder,
    copy_report_files,
    mlflow_run_record,
    write_environment,
    write_governance_tables,
    write_validation,
)
from clinical_mlops.audit.bundle._trail import write_ledger_segment

__all__ = ["BundleResult", "export", "verify_bundle"]


@dataclass
class BundleResult:
    """Where the bundle was written, its manifest hash and files, and what it includes and lacks."""

    path: Path
    manifest_sha256: str
    files: dict[str, dict[str, Any]]
    ledger_ok: bool
    trail_entries: int
    included: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    ledger_entry_seq: int | None = None


def export(
    con: duckdb.DuckDBPyConnection,
    model_name: str,
    version: str | int,
    out: Path | str,
    *,
    ledger_path: Path | str,
    tracking_uri: str | None = None,
    artifact_root: Path | str | None = None,
    reports_dir: Path | str | None = None,
    replay: bool = False,
    actor: str | None = None,
) -> BundleResult:
    """Write the audit bundle of ``model_name`` version ``version`` into ``out`` (a new or empty folder)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder for the bundle")
    ledger_path = Path(ledger_path)
    record = lineage.model_lineage(con, model_name, version)
    out.mkdir(parents=True, exist_ok=True)
    bundle = BundleFolder(out)
    try:
        bundle.json("lineage/lineage.json", record.as_dict())
        bundle.included.append(f"lineage: {len(record.extracts)} input extracts with sha256, code and split hashes")
        bundle.json("model/hyperparameters.json", record.params)
        run = mlflow_run_record(record, tracking_uri, artifact_root)
        if run is not None:
            bundle.json("model/mlflow_run.json", run)
            bundle.included.append("MLflow run: params, metrics, tags; model-version tags")
        else:
            bundle.absent.append("MLflow run record: registry not reachable from this export")
        write_environment(bundle, record, run)
        evaluation = con.execute(
            "SELECT * FROM ml.evaluation_metrics WHERE model_name = ? AND model_version = ? "
            "ORDER BY evaluated_at, attribute, \"group\", metric",
            [record.model_name, record.model_version],
        ).df()
        if evaluation.empty:
            bundle.absent.append("evaluation metrics: model_evaluation has not run on this version")
        else:
            bundle.csv("metrics/evaluation_metrics.csv", evaluation)
            bundle.included.append(f"evaluation metrics with CIs ({evaluation['evaluated_at'].nunique()} evaluation(s))")
        write_validation(bundle, con, record)
        write_governance_tables(bundle, con, record)
        copy_report_files(bundle, Path(reports_dir) if reports_dir else None, record)

        card = model_card.build_model_card(con, record.model_name, record.model_version)
        model_card.write_model_card(card, out / "model_card")
        recorded_sha = ((run or {}).get("model_version_tags") or {}).get(model_card.TAG_CARD)
        if recorded_sha is None:
            card_note = "no card hash recorded in MLflow for this version yet; the bundled card was generated now."
        elif recorded_sha == card.sha256:
            card_note = f"identical to the card recorded in MLflow (sha256 `{recorded_sha}`)."
        else:
            card_note = (f"regenerated now; differs from the card recorded in MLflow (`{recorded_sha}`) because the "
                         "records changed since (e.g. a later evaluation).")
        bundle.included.append("model card and TRIPOD+AI report (Markdown and HTML)")

        replay_report = None
        if replay:
            replay_report = replay_module.replay(con, record.model_name, record.model_version,
                                                 tracking_uri=tracking_uri, artifact_root=artifact_root)
            bundle.json("replay.json", replay_report.as_dict())
            bundle.text("replay.md", replay_report.to_markdown())
            bundle.included.append(f"replay: {'identical' if replay_report.identical else 'differs'}")

        ledger_ok, trail_entries, ledger_info = write_ledger_segment(bundle, ledger_path, record, con)
        bundle.included.append("ledger segment with its verification, and the trail as CSV")
        shutil.copyfile(bundle_verifier.__file__, bundle.path("verify_bundle.py"))
        write_index(bundle, record, evaluation, ledger_info, card, card_note, replay_report, trail_entries)
        assert_no_patient_rows(out)
        digest, files = write_manifest(out, {
            "model_name": record.model_name,
            "model_version": record.model_version,
            "ledger_head_seq": ledger_info["segment"].get("end_seq"),
            "ledger_ok": ledger_ok,
            "model_card_sha256": card.sha256,
        })
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    entry = ledger.append(
        ledger_path,
        event_type=audit_events.EVENT_BUNDLE,
        subject=f"model:{record.model_name}/{record.model_version}",
        payload={
            "model_name": record.model_name,
            "model_version": record.model_version,
            "manifest_sha256": digest,
            "files": len(files),
            "ledger_segment": [ledger_info["segment"].get("start_seq"), ledger_info["segment"].get("end_seq")],
            "ledger_ok": ledger_ok,
            "replay_identical": None if replay_report is None else replay_report.identical,
        },
        actor=actor,
    )
    return BundleResult(
        path=out, manifest_sha256=digest, files=files, ledger_ok=ledger_ok, trail_entries=trail_entries,
        included=bundle.included, absent=bundle.absent, ledger_entry_seq=entry.seq if entry else None,
    )


def verify_bundle(path: Path | str) -> tuple[bool, list[str]]:
    """Check a bundle's manifest and ledger segment (what ``verify_bundle.py`` does)."""
    return bundle_verifier.verify_bundle(Path(path))
