"""Security scan: run the demo graph once, then search everything it produced for secrets and patient data.

The graph runs as a user runs it (``clinical-mlops demo`` on a synthetic source, then
``land`` of an extra extract with planted identifiers, ``api-key create``, ``audit export``),
in subprocesses with their own data folder and Dagster home and known keys. Patient numbers
are 12 digits (``731`` + the synthetic number) so a leak is found without false positives.

Scanned: every Dagster event and run record of the instance, every file under the data
folder, the Dagster home and the exported bundle (Dagster storage and compute logs, MLflow's
store and every artifact, reports, model cards, the audit ledger, API keys file), MLflow's
params, tags, metric names and registered-model descriptions through its client, every
warehouse table except ``raw.synthetic_diabetes130`` (the one place raw rows belong), and the captured
stdout/stderr of every command. Not scanned: the landing zone, the source extract and
``raw.synthetic_diabetes130``, which hold patient data by design.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from clinical_mlops.ingestion import diabetes130, synthetic
from clinical_mlops.core.settings import PROJECT_ROOT

pytestmark = pytest.mark.e2e

SOURCE = "synthetic_diabetes130"
COHORT = f"{SOURCE}_readmission_30d"
PSEUDONYM_KEY = "scan-pseudonym-key-Vq7Rk2Lx9Tz4"
LEDGER_KEY = "scan-ledger-key-Hw3Nc8Pd5Jy1"
ENCOUNTERS = 2_500
PATIENT_PREFIX = 731_000_000_000
PLANTED = {
    ("medical_specialty", "name"): "Zebediah Quenby",
    ("payer_code", "ssn"): "512-88-4407",
    ("weight", "phone"): "(555) 867-5309",
    ("medical_specialty", "email"): "zebediah.quenby@example.org",
    ("weight", "full_date"): "1961-07-23",
    ("weight", "zip5"): "48109",
}
QUARANTINE_CANARY = "QuarantineCanaryXq"
"""An out-of-vocabulary value in a landed extract: quarantined, and never seen outside raw."""
ROW_PREVIEWS = {
    "DataFrame repr": re.compile(r"\[\d+ rows x \d+ columns\]"),
    "columns of a row dump": re.compile(r"encounter_id\s+patient_nbr\s+race"),
    "CSV header of an extract": re.compile(r"encounter_id,patient_nbr,race"),
}
PATIENT_NUMBER = re.compile(r"(?<![0-9A-Za-z])731[0-9]{9}(?![0-9A-Za-z])")


@dataclass
class Scan:
    root: Path
    data: Path
    dagster_home: Path
    bundle: Path
    patient_numbers: set[str]
    api_key: str
    outputs: dict[str, str]
    """Captured stdout/stderr per command (the key's own display left out)."""

    @property
    def summary(self) -> dict:
        return json.loads((self.root / "summary.json").read_text())


def _env(root: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "CLINICAL_MLOPS_DATA_DIR": str(root / "data"),
        "DAGSTER_HOME": str(root / "dagster_home"),
        "CLINICAL_MLOPS_PSEUDONYM_KEY": PSEUDONYM_KEY,
        "CLINICAL_MLOPS_LEDGER_KEY": LEDGER_KEY,
    }
    for name in ("MLFLOW_TRACKING_URI", "CLINICAL_MLOPS_LANDING_DIR", "CLINICAL_MLOPS_WAREHOUSE",
                 "CLINICAL_MLOPS_LEDGER", "CLINICAL_MLOPS_LEDGER_HEAD", "CLINICAL_MLOPS_SERVING_DIR",
                 "CLINICAL_MLOPS_API_KEYS"):
        env.pop(name, None)
    return env


def _dagster_home(root: Path) -> Path:
    """The project's dagster.yaml with its storage under this test's folder (compute logs included)."""
    home = root / "dagster_home"
    home.mkdir()
    config = (PROJECT_ROOT / "dagster.yaml").read_text().replace("base_dir: data/", f"base_dir: {root}/data/")
    assert config.count(f"base_dir: {root}/data/") == 3
    (home / "dagster.yaml").write_text(config)
    return home


def _sources(root: Path) -> tuple[Path, Path, set[str]]:
    """The demo's source (with a quarantine canary) and an extra extract with planted identifiers."""
    frame = synthetic.generate_encounters(synthetic.SyntheticConfig(n_encounters=ENCOUNTERS + 30, seed=5))
    frame[diabetes130.PATIENT_ID] = [str(PATIENT_PREFIX + int(p)) for p in frame[diabetes130.PATIENT_ID]]
    source, planted = frame.iloc[:ENCOUNTERS].copy(), frame.iloc[ENCOUNTERS:].reset_index(drop=True)
    source.iloc[10, source.columns.get_loc("medical_specialty")] = QUARANTINE_CANARY
    for row, ((column, _kind), value) in enumerate(PLANTED.items()):
        planted.loc[2 * row + 1, column] = value
    (root / "source").mkdir()
    source_path, planted_path = root / "source" / "diabetic_data.csv", root / "source" / "planted_identifiers.csv"
    source.to_csv(source_path, index=False, lineterminator="\n")
    planted.to_csv(planted_path, index=False, lineterminator="\n")
    return source_path, planted_path, set(frame[diabetes130.PATIENT_ID])


DRIVER = """
import json, sys
from clinical_mlops.cli import main as cli
for argv in json.loads(sys.argv[1]):
    for stream in (sys.stdout, sys.stderr):
        print("@@@ " + " ".join(argv), file=stream, flush=True)
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    print(f"@@@ exit {code}", file=sys.stderr, flush=True)
"""


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^@@@ (.*)$", text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Scan:
    root = tmp_path_factory.mktemp("security_scan")
    home = _dagster_home(root)
    source, planted, patient_numbers = _sources(root)
    env = _env(root)
    demo = subprocess.run(
        # synthetic rows in the Diabetes 130 format: the synthetic source, not the real release's
        [sys.executable, "-m", "clinical_mlops.cli.main", "demo", "--source", str(source), "--source-name", SOURCE,
         "--extracts", "2", "--summary-json", str(root / "summary.json")],
        env=env, capture_output=True, text=True, timeout=600, cwd=root,
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    bundle = root / "bundle"
    commands = [
        ["land", str(planted), "--source", SOURCE],
        ["api-key", "create", "--name", "ward-system"],
        ["api-key", "list"],
        ["audit", "verify"],
        ["audit", "export", "--model", f"{COHORT}_candidate", "--version", "latest", "--out", str(bundle)],
    ]
    after = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(commands)],
        env=env, capture_output=True, text=True, timeout=600, cwd=root,
    )
    out, err = _sections(after.stdout), _sections(after.stderr)
    assert "Traceback" not in after.stderr, after.stderr[-3000:]
    exits = re.findall(r"^@@@ exit (\S+)$", after.stderr, re.MULTILINE)
    assert exits == ["1", "0", "0", "0", "0"], after.stderr[-3000:]  # the planted extract is refused by the gate
    assert json.loads(out[" ".join(commands[0])])["status"] == "rejected"
    api_key = out.pop("api-key create --name ward-system").strip()
    assert api_key.startswith("cmk_")
    outputs = {"demo stdout": demo.stdout, "demo stderr": demo.stderr}
    outputs |= {f"{name} stdout": text for name, text in out.items()}
    outputs |= {f"{name} stderr": text for name, text in err.items()}
    return Scan(root, root / "data", home, bundle, patient_numbers, api_key, outputs)


def _findings(scan: Scan, where: str, text: str) -> list[str]:
    """What in ``text`` must not be there, named by kind (the values are fake, but not repeated)."""
    found = [f"{where}: planted {kind}" for (_column, kind), value in PLANTED.items()
             if (re.search(rf"(?<![0-9A-Za-z]){value}(?![0-9A-Za-z])", text) if value.isdigit() else value in text)]
    if QUARANTINE_CANARY in text:
        found.append(f"{where}: a quarantined row's value")
    if leaked := set(PATIENT_NUMBER.findall(text)) & scan.patient_numbers:
        found.append(f"{where}: {len(leaked)} raw patient_nbr value(s)")
    for name, secret in (("pseudonymisation key", PSEUDONYM_KEY), ("ledger key", LEDGER_KEY), ("API key", scan.api_key)):
        if secret in text:
            found.append(f"{where}: the {name}")
    found += [f"{where}: a row preview ({name})" for name, pattern in ROW_PREVIEWS.items() if pattern.search(text)]
    return found


def _file_texts(path: Path) -> list[tuple[str, str]]:
    """The file's bytes as text, plus the members of a zip or the content of a gzip."""
    data = path.read_bytes()
    texts = [(str(path), data.decode("latin-1"))]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            texts += [(f"{path}!{m}", archive.read(m).decode("latin-1")) for m in archive.namelist()]
    elif data[:2] == b"\x1f\x8b":
        texts.append((f"{path}!gunzip", gzip.decompress(data).decode("latin-1")))
    return texts


def _scanned_files(scan: Scan) -> list[Path]:
    excluded = (scan.data / "landing", scan.root / "source")
    files = []
    for path in sorted(scan.root.rglob("*")):
        if not path.is_file() or any(path.is_relative_to(e) for e in excluded):
            continue
        if path.name.startswith("warehouse.duckdb"):
            continue  # raw.synthetic_diabetes130 holds the extracts by design; its other tables are scanned below
        files.append(path)
    return files


def test_the_scan_covers_what_the_graph_produced(scan):
    files = _scanned_files(scan)
    names = [str(p.relative_to(scan.root)) for p in files]
    expectations = {
        "Dagster run and event storage": r"^data/dagster/storage/.*\.db$",
        "MLflow store": r"^data/mlflow/mlflow\.db$",
        "a logged model": r"^data/mlflow/artifacts/.*MLmodel$",
        "a model card": r"model_card.*\.(md|html|json)$",
        "an HTML report": r"^data/reports/.*\.html$",
        "the audit ledger": r"^data/audit/ledger\.jsonl$",
        "the exported bundle": r"^bundle/.+",
        "the API keys file": r"^data/serving/api_keys\.json$",
    }
    missing = [what for what, pattern in expectations.items() if not any(re.search(pattern, n) for n in names)]
    assert not missing, f"nothing to scan for: {missing}"
    assert len(scan.outputs) >= 8
    # Control: the same reading of a file finds the patient numbers where they belong.
    assert [p.name for p in (scan.data / "landing").iterdir()] == [SOURCE]  # the demo landed into its source's folder
    landed = sorted((scan.data / "landing" / SOURCE).glob("*.csv"))[0]
    control = " ".join(f for where, text in _file_texts(landed) for f in _findings(scan, where, text))
    assert "raw patient_nbr" in control and "CSV header of an extract" in control


def test_no_file_holds_patient_data_secrets_or_row_previews(scan):
    findings = [f for path in _scanned_files(scan) for where, text in _file_texts(path) for f in _findings(scan, where, text)]
    assert not findings, "\n".join(findings)


def test_no_dagster_event_or_run_record_holds_patient_data_or_secrets(scan):
    import dagster as dg

    with contextlib.ExitStack() as stack:
        previous = os.environ.get("DAGSTER_HOME")
        os.environ["DAGSTER_HOME"] = str(scan.dagster_home)
        stack.callback(lambda: os.environ.__setitem__("DAGSTER_HOME", previous) if previous else os.environ.pop("DAGSTER_HOME"))
        instance = stack.enter_context(dg.DagsterInstance.get())
        records = instance.get_run_records()
        assert len(records) >= 7  # two extracts, training, fairness, release, drift, scoring, the planted extract
        findings, events = [], 0
        for record in records:
            run = record.dagster_run
            findings += _findings(scan, f"run {run.job_name} record", repr(run))
            for entry in instance.all_logs(run.run_id):
                events += 1
                findings += _findings(scan, f"run {run.job_name} event", repr(entry))
    assert events > 100
    assert not findings, "\n".join(sorted(set(findings)))


def test_no_mlflow_param_tag_metric_name_or_description_holds_patient_data_or_secrets(scan):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{scan.data / 'mlflow' / 'mlflow.db'}")
    experiments = client.search_experiments()
    runs = [r for e in experiments for r in client.search_runs([e.experiment_id], max_results=1000)]
    assert len(runs) >= 4
    findings = []
    for run in runs:
        text = json.dumps({"params": run.data.params, "tags": run.data.tags, "metrics": sorted(run.data.metrics)})
        findings += _findings(scan, f"MLflow run {run.info.run_id[:8]}", text)
    models = client.search_registered_models()
    assert models
    for model in models:
        versions = client.search_model_versions(f"name = '{model.name}'")
        text = repr(model) + "".join(repr(v) for v in versions)
        findings += _findings(scan, f"registered model {model.name}", text)
    assert not findings, "\n".join(findings)


def test_no_command_output_holds_patient_data_or_secrets(scan):
    findings = [f for where, text in scan.outputs.items() for f in _findings(scan, where, text)]
    assert not findings, "\n".join(findings)


def test_only_raw_encounters_holds_raw_patient_numbers_in_the_warehouse(scan):
    import duckdb

    with contextlib.closing(duckdb.connect(str(scan.data / "warehouse.duckdb"), read_only=True)) as con:
        tables = con.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('information_schema', 'pg_catalog')"
        ).fetchall()
        assert len(tables) > 15
        findings = []
        for (table,) in tables:
            if table == f"raw.{SOURCE}":
                continue
            rows = con.execute(f"SELECT * FROM {table}").fetchall()
            findings += _findings(scan, f"warehouse {table}", repr(rows))
        raw = {p for (p,) in con.execute(f"SELECT DISTINCT patient_nbr FROM raw.{SOURCE}").fetchall()}
    assert raw and raw <= scan.patient_numbers  # the raw table is where they are, so the scan can see them
    assert not findings, "\n".join(findings)


def test_the_scanner_finds_what_it_looks_for(scan):
    patient = sorted(scan.patient_numbers)[0]
    planted = f"x {patient} y {PLANTED[('payer_code', 'ssn')]} {scan.api_key} [3 rows x 50 columns] {PSEUDONYM_KEY}"
    kinds = " ".join(_findings(scan, "probe", planted))
    for expected in ("raw patient_nbr", "planted ssn", "the API key", "row preview", "pseudonymisation key"):
        assert expected in kinds
    assert not _findings(scan, "probe", f"sha {patient}ab 1{patient} encounter 12522 key fingerprint")


# --------------------------------------------------------------------------------------------
# Servers bind the loopback address unless told otherwise
# --------------------------------------------------------------------------------------------


def test_serve_binds_loopback_by_default():
    import inspect

    from clinical_mlops.cli import main as cli
    from clinical_mlops.scoring import service as serving

    args = cli.build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and not args.allow_remote
    assert inspect.signature(serving.serve).parameters["host"].default == "127.0.0.1"


def test_serve_refuses_a_non_loopback_host_without_allow_remote(capsys):
    from clinical_mlops.cli import main as cli

    assert cli.main(["serve", "--host", "0.0.0.0"]) == 2
    assert "refusing to bind 0.0.0.0" in capsys.readouterr().err


def test_make_ui_binds_both_servers_to_loopback():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    ui = re.search(r"^ui:.*?(?=^\S)", makefile, re.MULTILINE | re.DOTALL).group(0)
    assert re.search(r"mlflow ui --host 127\.0\.0\.1 ", ui)
    assert re.search(r"dagster dev -h 127\.0\.0\.1 ", ui)
    assert "0.0.0.0" not in makefile


def test_no_code_binds_all_interfaces():
    sources = [*(PROJECT_ROOT / "clinical_mlops").rglob("*.py"), PROJECT_ROOT / "workspace.yaml",
               PROJECT_ROOT / "dagster.yaml"]
    binding = re.compile(r"host\s*=\s*['\"](0\.0\.0\.0|::)['\"]|['\"]0\.0\.0\.0['\"]")
    offenders = [str(p.relative_to(PROJECT_ROOT)) for p in sources if p.exists() and binding.search(p.read_text())]
    assert not offenders


def test_the_demo_ran_every_stage_and_its_summary_reconciles(scan):
    """The same demo run, read as a user reads it: progress, summary figures, counts that add up."""
    err, out = scan.outputs["demo stderr"], scan.outputs["demo stdout"]
    assert "Landing and validating" in err and "candidate_model" in err
    summary = scan.summary
    assert summary["source"] == SOURCE
    assert [e["status"] for e in summary["extracts"]] == ["landed", "landed"]
    landed = sum(e["rows_landed"] for e in summary["extracts"])
    assert landed == ENCOUNTERS
    assert sum(e["rows_valid"] + e["rows_quarantined"] for e in summary["extracts"]) == landed
    assert sum(e["rows_quarantined"] for e in summary["extracts"]) >= 1  # the quarantine canary
    assert set(summary["models"]) == {COHORT, f"{SOURCE}_prolonged_stay"}
    readmission = summary["models"][COHORT]
    assert readmission["candidate"]["registered_model"] == f"{COHORT}_candidate"
    low, high = (float(x) for x in readmission["evaluation"]["candidate_auroc_ci"].split("–"))
    assert low <= readmission["evaluation"]["candidate_auroc"] <= high
    assert "AUROC" in out and "MLflow" in out
