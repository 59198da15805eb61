"""Faults across processes: concurrent writers, SIGKILL mid-step, full and read-only disks, a broken MLflow store.

Every test runs the project in child processes on a temporary project instance (its own
``DAGSTER_HOME`` with a copy of the project's ``dagster.yaml``, so the ``duckdb_warehouse``
pool is in force) and a temporary data folder, as a user's second terminal would.
"""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from clinical_mlops.core.settings import PROJECT_ROOT
from clinical_mlops_tests.conftest import SYNTHETIC

INGESTION_JOB = f"ingestion_job_{SYNTHETIC}"
TRAINING_JOB = f"training_job_{SYNTHETIC}"
"""The synthetic source's jobs (the cross-source training_job would also fit the cohorts of sources with no data)."""

pytestmark = pytest.mark.e2e

ROWS_PER_EXTRACT = 1_500


@dataclass
class Project:
    """A temporary project instance: data folder, Dagster home, landing zone, two extracts."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def warehouse(self) -> Path:
        return self.data / "warehouse.duckdb"

    @property
    def landing(self) -> Path:
        """The synthetic source's folder of the landing zone."""
        return self.data / "landing" / SYNTHETIC

    @property
    def ledger(self) -> Path:
        return self.data / "audit" / "ledger.jsonl"

    @property
    def mlflow_db(self) -> Path:
        return self.data / "mlflow" / "mlflow.db"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "CLINICAL_MLOPS_DATA_DIR": str(self.data),
            "DAGSTER_HOME": str(self.root / "home"),
            "CLINICAL_MLOPS_PSEUDONYM_KEY": "fault-test-key",
            "CLINICAL_MLOPS_LEDGER_KEY": "fault-test-ledger-key",
            "PYTHONPATH": str(PROJECT_ROOT),
        }
        for name in ("MLFLOW_TRACKING_URI", "CLINICAL_MLOPS_WAREHOUSE", "CLINICAL_MLOPS_LEDGER", "DAGSTER_RUN_ID"):
            env.pop(name, None)
        return {**env, **extra}

    def spawn(self, args: list[str], **extra: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, *args], env=self.env(**extra), cwd=self.root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def cli(self, *args: str, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
        return finish(self.spawn(["-m", "clinical_mlops.cli.main", *args], **extra), timeout)

    def job(self, job: str, partition: str | None = None, timeout: float = 400, **extra: str) -> dict:
        proc = finish(self.spawn(["-m", "clinical_mlops_tests.cli._fault_driver", job, *([partition] if partition else [])],
                                 **extra), timeout)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def instance(self, monkeypatch):
        import dagster as dg

        monkeypatch.chdir(self.root)  # dagster.yaml's storage paths are relative to the working directory
        return dg.DagsterInstance.from_config(str(self.root / "home"))


def finish(proc: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
    """Wait for a child; on timeout SIGKILL it (Dagster swallows SIGTERM while waiting for a pool slot)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{proc.args} did not finish in {timeout} s; stderr tail:\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def kill_at(project: Project, point: str, job: str, partition: str | None = None) -> tuple[subprocess.Popen, int]:
    """Start ``job`` with a fault point, wait until the child reports it is there, SIGKILL it."""
    marker = project.root / f"at-{point}-{uuid.uuid4().hex[:6]}"
    proc = project.spawn(["-m", "clinical_mlops_tests.cli._fault_driver", job, *([partition] if partition else [])],
                         FAULT_POINT=point, FAULT_MARKER=str(marker))
    deadline = time.monotonic() + 300
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{job} never reached {point}: {proc.communicate()[1][-3000:]}")
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return proc, int(marker.read_text())


@pytest.fixture
def project(tmp_path: Path, small_encounters) -> Project:
    project = Project(tmp_path)
    (tmp_path / "home").mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", tmp_path / "home" / "dagster.yaml")
    project.landing.mkdir(parents=True)
    (tmp_path / "incoming").mkdir()
    small_encounters.iloc[:ROWS_PER_EXTRACT].to_csv(tmp_path / "incoming" / "a.csv", index=False, lineterminator="\n")
    small_encounters.iloc[ROWS_PER_EXTRACT:2 * ROWS_PER_EXTRACT].to_csv(
        tmp_path / "incoming" / "b.csv", index=False, lineterminator="\n")
    return project


def read(warehouse: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def extract_counts(project: Project) -> dict[str, tuple[int, int, int, int]]:
    """extract → (rows_landed recorded, raw rows, staging rows, quarantined rows)."""
    rows = read(project.warehouse, """
        SELECT e.extract_id, e.rows_landed,
               (SELECT count(*) FROM raw.synthetic_diabetes130 r WHERE r._extract_id = e.extract_id),
               (SELECT count(*) FROM staging.synthetic_diabetes130 s WHERE s.extract_id = e.extract_id),
               (SELECT count(*) FROM staging.synthetic_diabetes130__quarantine q WHERE q.extract_id = e.extract_id)
        FROM raw.extracts e ORDER BY 1""")
    return {r[0]: tuple(int(x) for x in r[1:]) for r in rows}


def assert_ledger_verifies(project: Project) -> None:
    verified = project.cli("audit", "verify", "--json", timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr[-2000:]
    result = json.loads(verified.stdout)
    assert result["ok"] and result["entries"] > 0 and result["mirror_checked"]


def step_windows(instance, run_id: str) -> dict[str, tuple[float, float]]:
    """step → (start, end) wall times of a finished run."""
    import dagster as dg

    windows: dict[str, list[float]] = {}
    for record in instance.get_records_for_run(run_id).records:
        event = record.event_log_entry
        if event.dagster_event is None:
            continue
        kind = event.dagster_event.event_type
        if kind == dg.DagsterEventType.STEP_START:
            windows.setdefault(event.step_key, [event.timestamp, event.timestamp])[0] = event.timestamp
        elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            windows.setdefault(event.step_key, [event.timestamp, event.timestamp])[1] = event.timestamp
    return {k: (v[0], v[1]) for k, v in windows.items()}


# ---------------------------------------------------------------------------------------------
# two writers at once
# ---------------------------------------------------------------------------------------------


def test_two_landings_at_once_both_finish_without_lost_writes(project: Project, monkeypatch):
    """Two ``clinical-mlops land`` processes on one instance and one warehouse: the pool queues their steps."""
    first = project.spawn(["-m", "clinical_mlops.cli.main", "land", str(project.root / "incoming" / "a.csv"), "--source", "synthetic_diabetes130"])
    second = project.spawn(["-m", "clinical_mlops.cli.main", "land", str(project.root / "incoming" / "b.csv"), "--source", "synthetic_diabetes130"])
    results = [finish(first, 400), finish(second, 400)]
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
    reports = [json.loads(r.stdout) for r in results]
    assert [r["status"] for r in reports] == ["landed", "landed"]

    counts = extract_counts(project)
    assert set(counts) == {"a.csv", "b.csv"}
    for landed, raw, valid, quarantined in counts.values():
        assert landed == raw == ROWS_PER_EXTRACT
        assert valid + quarantined == ROWS_PER_EXTRACT and valid > 0
    assert read(project.warehouse, "SELECT count(*) FROM raw.synthetic_diabetes130")[0][0] == 2 * ROWS_PER_EXTRACT

    # The pool really serialised the warehouse steps of the two processes: no two overlap.
    instance = project.instance(monkeypatch)
    windows = [w for r in reports for w in step_windows(instance, r["run_id"]).values()]
    assert len(windows) == 4
    windows.sort()
    assert all(earlier[1] <= later[0] for earlier, later in zip(windows, windows[1:])), windows
    assert_ledger_verifies(project)


_HOLD_LOCK = """
import sys, time
from clinical_mlops.core import warehouse
con = warehouse.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("CREATE TABLE IF NOT EXISTS raw.held (x INTEGER)")
con.execute("INSERT INTO raw.held VALUES (1)")
con.close()
"""

_WRITE = """
import sys, time
from clinical_mlops.core import warehouse
started = time.monotonic()
try:
    con = warehouse.connect(sys.argv[1], wait_seconds=float(sys.argv[2]))
except warehouse.WarehouseBusyError as exc:
    print("busy:", exc); sys.exit(3)
con.execute("CREATE TABLE IF NOT EXISTS raw.written (x INTEGER)")
con.execute("INSERT INTO raw.written VALUES (2)")
con.close()
print(f"waited {time.monotonic() - started:.2f}")
"""


def test_a_writer_waits_for_another_process_lock_then_writes(project: Project):
    """``warehouse.connect`` across processes: waits with backoff while DuckDB's lock is held, or says it is busy."""
    holder = project.spawn(["-c", _HOLD_LOCK, str(project.warehouse), "4"])
    assert holder.stdout.readline().strip() == "locked"
    patient = project.spawn(["-c", _WRITE, str(project.warehouse), "60"])
    impatient = finish(project.spawn(["-c", _WRITE, str(project.warehouse), "0.5"]), 60)
    assert impatient.returncode == 3
    assert "busy: the warehouse warehouse.duckdb is locked by another process" in impatient.stdout
    assert finish(holder, 60).returncode == 0
    waited = finish(patient, 60)
    assert waited.returncode == 0, waited.stderr[-2000:]
    assert float(waited.stdout.split()[-1]) > 2.0  # it really waited for the holder
    assert read(project.warehouse, "SELECT (SELECT count(*) FROM raw.held), (SELECT count(*) FROM raw.written)") == [(1, 1)]


# ---------------------------------------------------------------------------------------------
# SIGKILL mid-step
# ---------------------------------------------------------------------------------------------


def test_sigkill_inside_validation_rolls_back_and_the_rerun_is_not_blocked(project: Project, monkeypatch):
    """Killed inside validation's transaction: nothing half-written, the run recovered, the rerun completes."""
    import dagster as dg

    shutil.copyfile(project.root / "incoming" / "a.csv", project.landing / "a.csv")
    _, pid = kill_at(project, "validation_before_commit", INGESTION_JOB, "a.csv")

    # raw landed (its own committed transaction); validation's uncommitted writes rolled back.
    assert extract_counts(project) == {"a.csv": (ROWS_PER_EXTRACT, ROWS_PER_EXTRACT, 0, 0)}
    instance = project.instance(monkeypatch)
    killed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    assert len(killed) == 1 and killed[0].tags["clinical_mlops/pid"] == str(pid)
    claimed = instance.event_log_storage.get_concurrency_info("duckdb_warehouse").claimed_slots
    assert [slot.run_id for slot in claimed] == [killed[0].run_id]  # the dead run still holds the pool slot

    rerun = project.cli("land", str(project.root / "incoming" / "a.csv"), "--source", "synthetic_diabetes130", timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"run {killed[0].run_id} ({INGESTION_JOB}) was abandoned: its process {pid}" in rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["status"] == "already_landed"
    assert report["rows_valid"] + report["rows_quarantined"] == ROWS_PER_EXTRACT

    landed, raw, valid, quarantined = extract_counts(project)["a.csv"]
    assert landed == raw == valid + quarantined == ROWS_PER_EXTRACT
    assert instance.get_run_by_id(killed[0].run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.event_log_storage.get_concurrency_info("duckdb_warehouse").claimed_slots == []
    assert_ledger_verifies(project)


def registered_versions(project: Project) -> list[tuple[str, str, str]]:
    """(name, version, source) of every registered model version, read straight from the store."""
    with sqlite3.connect(project.mlflow_db) as con:
        rows = con.execute("SELECT name, version, source FROM model_versions ORDER BY name, version").fetchall()
    return [(name, str(version), source) for name, version, source in rows]


def test_sigkill_after_a_model_is_registered_leaves_a_usable_registry(project: Project, monkeypatch):
    """Killed inside the MLflow run right after registration: every version loads, the rerun trains and records."""
    from mlflow.tracking import MlflowClient

    from clinical_mlops.core import tracking

    shutil.copyfile(project.root / "incoming" / "a.csv", project.landing / "a.csv")
    assert project.job(INGESTION_JOB, "a.csv")["success"]
    kill_at(project, "model_logged", TRAINING_JOB)

    tracking.configure(f"sqlite:///{project.mlflow_db}", project.data / "mlflow" / "artifacts")
    orphans = registered_versions(project)
    assert len(orphans) == 1  # the first fit registered, then the process died
    assert read(project.warehouse, "SELECT count(*) FROM ml.model_versions")[0][0] == 0
    name, version, _ = orphans[0]
    orphan_run = MlflowClient().get_model_version(name, version).run_id
    assert MlflowClient().get_run(orphan_run).info.status == "RUNNING"  # never ended
    assert tracking.load_model(f"models:/{name}/{version}") is not None  # no version without its artifact

    outcome = project.job(TRAINING_JOB, timeout=600)
    assert outcome["success"], outcome
    recorded = read(project.warehouse, "SELECT model_name, model_version, mlflow_run_id FROM ml.model_versions")
    assert len(recorded) == 4  # two cohorts x baseline and candidate
    assert orphan_run not in {r[2] for r in recorded}
    for model_name, model_version, _ in recorded:
        assert tracking.load_model(f"models:/{model_name}/{model_version}") is not None
    assert {(n, v) for n, v, _ in registered_versions(project)} >= {(n, v) for n, v, _ in recorded}
    assert_ledger_verifies(project)

    # A registered version whose artifact folder was deleted: the commands that load it say so.
    model_folder = Path(MlflowClient().get_model_version_download_uri(recorded[0][0], recorded[0][1])
                        .removeprefix("file://"))
    assert (model_folder / "MLmodel").is_file()
    shutil.rmtree(model_folder)
    replay = project.cli("audit", "replay", "--model", recorded[0][0], "--version", recorded[0][1], "--no-record")
    assert replay.returncode == 1, replay.stdout + replay.stderr[-2000:]
    assert "registered model not loadable" in replay.stdout
    assert "Traceback" not in replay.stderr
    error = [line for line in replay.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and f"the model artifact of {recorded[0][0]} v{recorded[0][1]} is missing" in error[0], error


# ---------------------------------------------------------------------------------------------
# disks: full, read-only
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def small_mount(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a genuinely full file system (ENOSPC). Needs root and mount (CI is root)."""
    target = tmp_path / "small_fs"
    target.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(target)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}): needs root")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_a_full_disk_is_reported_with_the_path(project: Project, small_mount: Path):
    """The warehouse on a full file system: one clear line naming the file and the problem, exit 1."""
    stats = os.statvfs(small_mount)
    (small_mount / "filler").write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - 256 * 1024))  # 256 KiB left
    warehouse = small_mount / "warehouse.duckdb"
    result = project.cli("land", str(project.root / "incoming" / "b.csv"), "--source", "synthetic_diabetes130", CLINICAL_MLOPS_WAREHOUSE=str(warehouse))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "no space left on device" in error[0].lower() and str(warehouse) in error[0], error


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder bind-mounted read-only (EROFS even for root, unlike chmod)."""
    target = tmp_path / "read_only"
    target.mkdir()
    yield target
    subprocess.run(["umount", "-l", str(target)], check=False)


def _make_read_only(target: Path) -> None:
    for command in (["mount", "--bind", str(target), str(target)],
                    ["mount", "-o", "remount,ro,bind", str(target)]):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot bind-mount read-only here ({done.stderr.strip()}): needs root")


def test_a_read_only_warehouse_is_reported_with_the_path(project: Project, read_only_dir: Path):
    """A warehouse on a read-only file system: writers fail with the path and the reason; readers still read."""
    from clinical_mlops.core import warehouse as wh

    path = read_only_dir / "warehouse.duckdb"
    wh.connect(path).close()
    _make_read_only(read_only_dir)
    with pytest.raises(OSError):
        (read_only_dir / "probe").write_text("x")  # genuinely read-only, for root too

    env = {"CLINICAL_MLOPS_WAREHOUSE": str(path)}
    for args in (["land", str(project.root / "incoming" / "a.csv"), "--source", "synthetic_diabetes130"],
                 ["promote", "--model", "m", "--version", "1", "--approver", "a", "--reason", "r"],
                 ["audit", "record"]):
        result = project.cli(*args, **env)
        assert result.returncode == 1, (args, result.stderr[-3000:])
        assert "Traceback" not in result.stderr, (args, result.stderr[-3000:])
        error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(error) == 1 and "read-only file system" in error[0].lower() and str(path) in error[0], (args, error)

    history = project.cli("alias-history", "--model", "m", **env)  # reading needs no write access
    assert history.returncode == 0, history.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# a corrupted MLflow store
# ---------------------------------------------------------------------------------------------


def test_a_corrupted_mlflow_store_is_reported_with_the_path(project: Project):
    """Garbage bytes in MLflow's SQLite file: the commands that read the registry say which file is broken."""
    from clinical_mlops.core import warehouse as wh

    wh.connect(project.warehouse).close()
    project.mlflow_db.parent.mkdir(parents=True)
    project.mlflow_db.write_bytes(os.urandom(64 * 1024))
    for args in (["champion", "--model", "synthetic_diabetes130_readmission_30d_candidate"],
                 ["promote", "--model", "synthetic_diabetes130_readmission_30d_candidate", "--version", "1", "--approver", "a",
                  "--reason", "r"]):
        result = project.cli(*args)
        assert result.returncode == 1, (args, result.stderr[-3000:])
        assert "Traceback" not in result.stderr, (args, result.stderr[-3000:])
        error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(error) == 1, (args, result.stderr[-3000:])
        assert "MLflow store" in error[0] and str(project.mlflow_db) in error[0], error
