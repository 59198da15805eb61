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

The parts: ``_pieces`` (the folder and the records it copies), ``_trail`` (the ledger segment
and the trail), ``_manifest`` (privacy guard, manifest, index page), ``_export``.
"""

from clinical_mlops.audit.bundle._export import BundleResult, export, verify_bundle
from clinical_mlops.audit.bundle._pieces import MAX_REPORT_BYTES, REPORT_KEYWORDS, REPORT_SUFFIXES
from clinical_mlops.audit.bundle._trail import TRAIL_COLUMNS

__all__ = [
    "MAX_REPORT_BYTES",
    "REPORT_KEYWORDS",
    "REPORT_SUFFIXES",
    "TRAIL_COLUMNS",
    "BundleResult",
    "export",
    "verify_bundle",
]
