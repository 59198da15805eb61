"""The audit bundle: everything that produced one model version, in one folder that verifies itself.

``export(con, model_name, version, out, ...)`` writes::

    index.md / index.html        what is in the bundle and what it says, for a human reader
    manifest.json                sha256 and size of every other file; manifest.sha256 its own hash
    verify_bundle.py             standalone (standard library only) verifier of manifest and ledger
    lineage/lineage.json         input extracts with sha256 data versions, code, split hashes, params
    lineage/extracts.csv         the input extracts as landed
    environment/provenance.json  git commit, lock hash, package versions recorded vs now
    environment/uv.lock          the lock file (when its hash is the recorded one)
    environment/cohort_spec.yaml the cohort specification (when its hash is the recorded one)
    model/hyperparameters.json, model/mlflow_run.json
    metrics/evaluation_metrics.csv   every evaluation of this version (aggregates with CIs)
    reports/...                  validation summary; fairness, drift and change-control records
                                 and report files where those stages have produced them
    model_card/...               model card and TRIPOD+AI report (Markdown and HTML)
    ledger/segment.jsonl         the contiguous ledger segment from this model's first entry to the head
    ledger/head.json, ledger/verification.json
    trail.csv                    this model's audit trail, one row per ledger entry
    replay.json / replay.md      when exported with ``replay=True``

No file holds a patient-level row: tables are aggregates, identifier columns are dropped and
every CSV/JSON is checked for identifier column names before the manifest is written. The export
itself is recorded in the ledger with the manifest's sha256.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from clinical_mlops.audit import events as audit_events, bundle_verifier, ledger, lineage, model_card
from clinical_mlops.core import provenance
from clinical_mlops.features.cohort import COHORTS_DIR
from clinical_mlops.core.settings import PROJECT_ROOT
from clinical_mlops.core.warehouse import table_exists as _table_exists, columns as _columns

__all__ = ["BundleResult", "export", "verify_bundle"]

REPORT_KEYWORDS = ("fairness", "drift", "change_control", "governance", "validation", "promotion")
REPORT_SUFFIXES = (".html", ".md", ".json", ".csv", ".png", ".txt")
MAX_REPORT_BYTES = 25 * 1024 * 1024
TRAIL_COLUMNS = ("seq", "ts", "actor", "event_type", "subject", "natural_key", "payload_sha256", "prev_hash",
                 "hash", "payload_json")


@dataclass
class BundleResult:
    path: Path
    manifest_sha256: str
    files: dict[str, dict[str, Any]]
    ledger_ok: bool
    trail_entries: int
    included: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    ledger_entry_seq: int | None = None


class _Bundle:
    def __init__(self, root: Path):
        self.root = root
        self.included: list[str] = []
        self.absent: list[str] = []

    def path(self, name: str) -> Path:
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def text(self, name: str, content: str) -> None:
        self.path(name).write_text(content, encoding="utf-8")

    def json(self, name: str, data: Any) -> None:
        self.text(name, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def csv(self, name: str, frame: pd.DataFrame) -> None:
        dropped = [c for c in frame.columns if str(c).lower() in ledger.FORBIDDEN_KEYS]
        frame = frame.drop(columns=dropped)
        self.path(name).write_text(frame.to_csv(index=False, lineterminator="\n"), encoding="utf-8")




def _model_rows(
    con: duckdb.DuckDBPyConnection, table: str, record: lineage.ModelLineage, *, limit: int = 50_000
) -> pd.DataFrame | None:
    """Rows of ``table`` about this model (by name and version, else name, else cohort)."""
    if not _table_exists(con, table):
        return None
    columns = _columns(con, table)
    where: list[str] = []
    params: list[Any] = []
    if "model_name" in columns:
        where.append("CAST(model_name AS VARCHAR) = ?")
        params.append(record.model_name)
        if "model_version" in columns:
            where.append("CAST(model_version AS VARCHAR) = ?")
            params.append(record.model_version)
    elif "cohort" in columns:
        where.append("cohort = ?")
        params.append(record.cohort)
    else:
        return None
    safe = ", ".join(f'"{c}"' for c in columns if c.lower() not in ledger.FORBIDDEN_KEYS)
    return con.execute(f"SELECT {safe} FROM {table} WHERE {' AND '.join(where)} LIMIT {limit}", params).df()


# ---------------------------------------------------------------------------------------------
# pieces
# ---------------------------------------------------------------------------------------------


def _environment(bundle: _Bundle, record: lineage.ModelLineage, run: dict[str, Any] | None) -> dict[str, Any]:
    tags = (run or {}).get("tags", {})
    recorded_versions = {k.removeprefix("version."): v for k, v in tags.items() if k.startswith("version.")}
    current_lock = provenance.lock_file_sha256()
    info = {
        "git_commit": record.git_commit,
        "git_dirty": record.git_dirty,
        "lock_sha256": record.lock_sha256,
        "cohort_spec_sha256": record.cohort_spec_sha256,
        "package_versions_recorded": recorded_versions,
        "package_versions_now": provenance.package_versions(),
        "lock_file_included": False,
        "cohort_spec_included": False,
    }
    lock = PROJECT_ROOT / "uv.lock"
    if lock.exists() and current_lock == record.lock_sha256:
        shutil.copyfile(lock, bundle.path("environment/uv.lock"))
        info["lock_file_included"] = True
        bundle.included.append("lock file (uv.lock, sha256 as recorded)")
    else:
        bundle.absent.append("lock file: the checked-out uv.lock is not the recorded one "
                             f"(recorded {record.lock_sha256[:12]}, now {current_lock[:12]}); take it from git "
                             f"commit {record.git_commit[:12]}")
    spec_file = COHORTS_DIR / f"{record.cohort}.yaml"
    if spec_file.exists() and hashlib.sha256(spec_file.read_bytes()).hexdigest() == record.cohort_spec_sha256:
        shutil.copyfile(spec_file, bundle.path("environment/cohort_spec.yaml"))
        info["cohort_spec_included"] = True
        bundle.included.append("cohort specification (sha256 as recorded)")
    else:
        bundle.absent.append("cohort specification: the current file's hash differs from the recorded one")
    bundle.json("environment/provenance.json", info)
    return info


def _mlflow_run(record: lineage.ModelLineage, tracking_uri: str | None, artifact_root) -> dict[str, Any] | None:
    if tracking_uri is None:
        return None
    try:
        client = model_card.mlflow_client(tracking_uri, artifact_root)
        run = client.get_run(record.mlflow_run_id)
        version = client.get_model_version(record.model_name, record.model_version)
    except Exception:  # noqa: BLE001 - the registry is optional for a bundle
        return None
    return {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "status": run.info.status,
        "start_time_ms": run.info.start_time,
        "end_time_ms": run.info.end_time,
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.log-model")},
        "model_version_tags": dict(version.tags),
        "model_version_source": version.source,
    }


def _validation(bundle: _Bundle, con: duckdb.DuckDBPyConnection, record: lineage.ModelLineage) -> None:
    ids = [e.extract_id for e in record.extracts]
    placeholders = ", ".join("?" for _ in ids) or "NULL"
    summary = con.execute(
        f"""SELECT e.extract_id, e.file_name, e.sha256, e.size_bytes, e.rows_landed, e.status, e.rejection_reason,
                   e.landed_at, coalesce(q.quarantined, 0) AS rows_quarantined,
                   e.rows_landed - coalesce(q.quarantined, 0) AS rows_valid
            FROM raw.extracts e
            LEFT JOIN (SELECT extract_id, count(*) AS quarantined FROM staging.quarantine GROUP BY 1) q USING (extract_id)
            WHERE e.extract_id IN ({placeholders}) ORDER BY e.extract_id""",
        ids,
    ).df()
    bundle.csv("lineage/extracts.csv", summary[["extract_id", "file_name", "sha256", "size_bytes", "rows_landed",
                                                "status", "landed_at"]])
    bundle.csv("reports/validation_summary.csv", summary)
    reasons = con.execute(
        f"""SELECT extract_id, trim(reason) AS reason, count(*) AS rows
            FROM (SELECT extract_id, unnest(string_split(reasons, ';')) AS reason FROM staging.quarantine
                  WHERE extract_id IN ({placeholders}))
            GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2""",
        ids,
    ).df()
    bundle.csv("reports/quarantine_reasons.csv", reasons)
    bundle.included.append("validation summary per extract and quarantine reasons (counts)")


def _governance_tables(bundle: _Bundle, con: duckdb.DuckDBPyConnection, record: lineage.ModelLineage) -> None:
    tables = {
        "fairness": ("monitoring.fairness_metrics", "monitoring.fairness_verdicts"),
        "drift": ("monitoring.drift_metrics",),
        "change_control": ("audit.promotion_decisions", "audit.alias_history", "audit.approvals"),
        "incidents": ("monitoring.incidents",),
    }
    for kind, names in tables.items():
        found = False
        for table in names:
            frame = _model_rows(con, table, record)
            if frame is None:
                continue
            found = True
            bundle.csv(f"reports/{kind}/{table.replace('.', '__')}.csv", frame)
            bundle.included.append(f"{kind}: {table} ({len(frame)} rows about this model)")
        if not found:
            bundle.absent.append(f"{kind}: no table of that stage in the warehouse yet ({', '.join(names)})")


def _report_files(bundle: _Bundle, reports_dir: Path | None, record: lineage.ModelLineage) -> None:
    if reports_dir is None or not reports_dir.exists():
        bundle.absent.append("report files: no reports folder")
        return
    copied = 0
    for path in sorted(reports_dir.rglob("*")):
        rel = path.relative_to(reports_dir).as_posix()
        if not path.is_file() or path.suffix not in REPORT_SUFFIXES or "model_cards/" in rel:
            continue
        if not any(k in rel.lower() for k in REPORT_KEYWORDS):
            continue
        parts = rel.split("/")
        if len(parts) > 1 and parts[0] != record.cohort and parts[0] in _cohort_names():
            continue
        if path.stat().st_size > MAX_REPORT_BYTES:
            bundle.absent.append(f"report file {rel}: larger than {MAX_REPORT_BYTES // 2**20} MiB, not copied")
            continue
        if path.suffix != ".png":
            text = path.read_text(encoding="utf-8", errors="replace").lower()
            if any(k in text for k in ("patient_key", "patient_nbr")):
                bundle.absent.append(f"report file {rel}: mentions patient identifiers, not copied")
                continue
        shutil.copyfile(path, bundle.path(f"reports/files/{rel}"))
        copied += 1
    if copied:
        bundle.included.append(f"{copied} report file(s) from the reports folder (fairness, drift, change control, ...)")
    else:
        bundle.absent.append("report files: none of the fairness / drift / change-control stages has written one yet")


def _cohort_names() -> set[str]:
    return {p.stem for p in COHORTS_DIR.glob("*.yaml")}


# ---------------------------------------------------------------------------------------------
# the ledger segment and the trail
# ---------------------------------------------------------------------------------------------


def _relevant(ledger_path: Path, record: lineage.ModelLineage) -> set[int]:
    name, version, cohort, role = record.model_name, record.model_version, record.cohort, record.role
    extracts = {e.extract_id for e in record.extracts}
    label = f"{name} v{version}"
    runs: set[str] = set()
    for entry in ledger.read_entries(ledger_path):
        if entry.event_type != audit_events.EVENT_MATERIALIZATION:
            continue
        payload, metadata = entry.payload, entry.payload.get("metadata") or {}
        asset = payload.get("asset_key") or ""
        if (metadata.get("registered_model") == name and str(metadata.get("model_version")) == version) \
                or (asset in lineage.PARTITIONED_ASSETS and payload.get("partition") in extracts) \
                or (asset.startswith(f"{cohort}/") and metadata.get(f"{role}_model") == label):
            runs.add(payload.get("run_id"))
    relevant: set[int] = set()
    for entry in ledger.read_entries(ledger_path):
        payload = entry.payload
        asset = payload.get("asset_key")
        in_run = payload.get("run_id") in runs and (
            asset is None or asset.startswith(f"{cohort}/")
            or (asset in lineage.PARTITIONED_ASSETS and payload.get("partition") in extracts)
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


def _ledger_segment(
    bundle: _Bundle, ledger_path: Path, record: lineage.ModelLineage, con: duckdb.DuckDBPyConnection
) -> tuple[bool, int, dict[str, Any]]:
    full = ledger.verify(ledger_path, con=con)
    relevant = _relevant(ledger_path, record) if ledger_path.exists() else set()
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
                    entry.payload_sha256, entry.prev_hash, entry.hash, ledger.canonical_json(entry.payload).decode(),
                ])
        ok, count, message = bundle_verifier.verify_segment(bundle.root / "ledger" / "segment.jsonl", head,
                                                            ledger._key())
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


# ---------------------------------------------------------------------------------------------
# privacy guard, manifest, index
# ---------------------------------------------------------------------------------------------


def _json_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return {str(k).lower() for k in value} | set().union(*(_json_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_json_keys(v) for v in value)) if value else set()
    return set()


def _assert_no_patient_rows(root: Path) -> None:
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


def _write_manifest(root: Path, meta: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in bundle_verifier.NOT_IN_MANIFEST:
            files[rel] = {"sha256": bundle_verifier._sha256_file(path), "bytes": path.stat().st_size}
    manifest = {"bundle": meta, "files": files}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    digest = bundle_verifier._sha256_file(root / "manifest.json")
    (root / "manifest.sha256").write_text(f"{digest}  manifest.json\n", encoding="utf-8")
    return digest, files


def _metric_line(evaluation: pd.DataFrame, metric: str) -> str:
    rows = evaluation[(evaluation["attribute"] == "overall") & (evaluation["metric"] == metric)]
    if rows.empty:
        return "—"
    latest = rows.sort_values("evaluated_at").iloc[-1]
    return model_card._with_ci(latest["estimate"], latest["lower"], latest["upper"])


def _index(bundle: _Bundle, record: lineage.ModelLineage, evaluation: pd.DataFrame, ledger_info: dict[str, Any],
           card: model_card.ModelCard, card_note: str, replay_report: Any | None, trail_entries: int) -> None:
    full, segment = ledger_info["full"], ledger_info["segment"]
    lines = [
        f"# Audit bundle: {record.model_name} v{record.model_version}",
        "",
        f"> Everything that produced this model version. Verify offline with `python verify_bundle.py` (checks every "
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
    lines += ["", "## Input extracts (data versions)", "", *model_card._extract_lines(record), "",
              "## Hyperparameters", "", "| parameter | value |", "|---|---|",
              *[f"| {k} | {v} |" for k, v in sorted(record.params.items())], ""]
    if card_note:
        lines += [f"Model card: {card_note}", ""]
    lines += ["## Included", "", *[f"- {item}" for item in bundle.included], "",
              "## Not included, and why", "", *([f"- {item}" for item in bundle.absent] or ["- nothing"]), "",
              "## Files", "", "See `manifest.json` for the sha256 of every file.", ""]
    text = "\n".join(lines)
    bundle.text("index.md", text)
    bundle.text("index.html", model_card.render_html(text, f"Audit bundle — {record.model_name} v{record.model_version}"))


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


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
    bundle = _Bundle(out)
    try:
        bundle.json("lineage/lineage.json", record.as_dict())
        bundle.included.append(f"lineage: {len(record.extracts)} input extracts with sha256, code and split hashes")
        bundle.json("model/hyperparameters.json", record.params)
        run = _mlflow_run(record, tracking_uri, artifact_root)
        if run is not None:
            bundle.json("model/mlflow_run.json", run)
            bundle.included.append("MLflow run: params, metrics, tags; model-version tags")
        else:
            bundle.absent.append("MLflow run record: registry not reachable from this export")
        _environment(bundle, record, run)
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
        _validation(bundle, con, record)
        _governance_tables(bundle, con, record)
        _report_files(bundle, Path(reports_dir) if reports_dir else None, record)

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
            from clinical_mlops.audit import replay as replay_module

            replay_report = replay_module.replay(con, record.model_name, record.model_version,
                                                 tracking_uri=tracking_uri, artifact_root=artifact_root)
            bundle.json("replay.json", replay_report.as_dict())
            bundle.text("replay.md", replay_report.to_markdown())
            bundle.included.append(f"replay: {'identical' if replay_report.identical else 'differs'}")

        ledger_ok, trail_entries, ledger_info = _ledger_segment(bundle, ledger_path, record, con)
        bundle.included.append("ledger segment with its verification, and the trail as CSV")
        shutil.copyfile(bundle_verifier.__file__, bundle.path("verify_bundle.py"))
        _index(bundle, record, evaluation, ledger_info, card, card_note, replay_report, trail_entries)
        _assert_no_patient_rows(out)
        digest, files = _write_manifest(out, {
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
