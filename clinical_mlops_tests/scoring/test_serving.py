"""The scoring service as a user sees it: a real uvicorn process on 127.0.0.1, a real HTTP client.

One server runs for the module against a temporary registry with a trained candidate. The
tests run in file order; the last one kills the server with SIGKILL under load.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient

from clinical_mlops.scoring import api_keys, prediction_log, champion as scoring
from clinical_mlops.registry import aliases as registry
from clinical_mlops.core import tracking, warehouse
from clinical_mlops.core.settings import PROJECT_ROOT
from clinical_mlops_tests import _trained
from clinical_mlops_tests.helpers import free_port

COHORT = "synthetic_diabetes130_readmission_30d"
MODEL = "synthetic_diabetes130_readmission_30d_candidate"
CARD = "c0" * 32


class Server:
    def __init__(self, root: Path, env: dict) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stderr = open(root / "server.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "clinical_mlops.cli.serving", "serve", "--port", str(self.port),
             "--cohort", COHORT, "--poll-seconds", "0.5", "--log-level", "warning"],
            cwd=PROJECT_ROOT, env=env, stdout=self.stderr, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                response = httpx.get(f"{self.url}/healthz", timeout=2)
                if response.status_code == 200:
                    return response.json()
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise TimeoutError("the server did not become ready")

    def wait_up(self, timeout: float = 120.0) -> httpx.Response:
        """The first answer of /healthz, whatever its status (503 while no champion is in service)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=2)
            except httpx.TransportError:
                time.sleep(0.25)
        raise TimeoutError("the server did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.stderr.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory, mlflow_template, small_encounters):
    root = tmp_path_factory.mktemp("serving")
    ws = _trained.new_workspace(root, mlflow_template)
    key, record = api_keys.create_key(root / "serving" / "api_keys.json", "test-ehr")
    env = {
        **os.environ,
        "CLINICAL_MLOPS_DATA_DIR": str(root),
        "MLFLOW_TRACKING_URI": ws.tracking_uri,
        "CLINICAL_MLOPS_SCHEDULES": "stopped",
    }
    # Started before the model exists; a registered version is no champion: it answers 503 with the reason
    # until the alias is set, then loads it (and the process start-up overlaps with the training below).
    server = Server(root, env)
    try:
        spec = _trained.load_cohort(COHORT)
        _trained.land_and_validate(ws, small_encounters, 2)
        outcome = _trained.train_candidate(ws, spec)
        tracking.configure(ws.tracking_uri, ws.artifacts)
        client = MlflowClient()
        client.set_model_version_tag(MODEL, outcome.model.version, "model_card_sha256", CARD)
        trained = _trained.Trained(workspace=ws, spec=spec, extract_ids=[], outcome=outcome)
        with warehouse.connect(ws.warehouse, read_only=True) as con:
            rows = con.execute(
                f"SELECT encounter_id, {', '.join(spec.features)} FROM {spec.features_table} "
                "ORDER BY encounter_id LIMIT 200"
            ).df()
        time.sleep(1.5)  # three polls with the version registered and no alias: no fallback may pick it up
        unavailable = {"health": server.wait_up()}
        first = rows.iloc[0].to_dict()
        body = {"encounter_id": int(first["encounter_id"]), "features": scoring.canonical_features(first, spec)}
        unavailable["predict"] = httpx.post(f"{server.url}/v1/predict", json=body, headers={"X-API-Key": key},
                                            timeout=30)
        unavailable["model"] = httpx.get(f"{server.url}/v1/model", headers={"X-API-Key": key}, timeout=30)
        client.set_registered_model_alias(MODEL, "champion", outcome.model.version)
        health = server.wait_ready()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the card tag was set after the first load: wait for the poll
            info = httpx.get(f"{server.url}/v1/model", headers={"X-API-Key": key}).json()
            if info["model"]["model_card_sha256"] == CARD:
                break
            time.sleep(0.2)
        yield {"server": server, "key": key, "key_id": record.key_id, "trained": trained, "rows": rows,
               "health": health, "unavailable": unavailable,
               "log_dir": prediction_log.cohort_directory(root / "serving" / "prediction_log", COHORT)}
    finally:
        server.stop()


def _body(service, i: int = 0) -> dict:
    spec = service["trained"].spec
    row = service["rows"].iloc[i].to_dict()
    return {"encounter_id": int(row["encounter_id"]), "features": scoring.canonical_features(row, spec)}


def _client(service, key: str | None = "valid") -> httpx.Client:
    headers = {} if key is None else {"X-API-Key": service["key"] if key == "valid" else key}
    return httpx.Client(base_url=service["server"].url, headers=headers, timeout=30)


def _log_records(service) -> list[dict]:
    out = []
    for path in prediction_log.list_segments(service["log_dir"]):
        for _, raw, terminated in prediction_log.iter_lines(path):
            if terminated:
                out.append(json.loads(raw))
    return out


def test_without_a_champion_the_service_answers_503_with_the_reason_and_scores_nothing(service):
    """A registered version without the alias is not served: no fallback to the latest version."""
    reason = scoring.no_champion_reason(COHORT)
    health = service["unavailable"]["health"]
    assert health.status_code == 503
    assert health.json()["status"] == "no_model" and health.json()["reason"] == reason
    predict = service["unavailable"]["predict"]
    assert predict.status_code == 503
    answer = predict.json()
    assert answer["detail"] == reason and "risk" not in answer
    assert answer["errors"] == [{"field": "model", "type": "unavailable", "message": reason}]
    info = service["unavailable"]["model"]
    assert info.status_code == 200 and info.json()["model"] is None and info.json()["reason"] == reason
    entries = [r for r in _log_records(service) if r["record"].get("request_id") == answer["request_id"]]
    assert [(e["kind"], e["record"]["response"]["status"]) for e in entries] == [("rejected", 503)]
    assert "risk" not in entries[0]["record"]["response"]


def test_health_is_open_and_names_the_model(service):
    assert service["health"]["status"] == "ok" and service["health"]["reason"] is None
    assert service["health"]["model_version"] == service["trained"].outcome.model.version
    assert service["health"]["model_source"] == scoring.SOURCE_ALIAS


@pytest.mark.parametrize("key", [None, "cmk_deadbeef_not-a-real-key", "something-else"])
def test_predictions_require_a_valid_api_key(service, key):
    with _client(service, key) as client:
        response = client.post("/v1/predict", json=_body(service))
        assert response.status_code == 401
        assert "risk" not in response.json()
        assert client.get("/v1/model").status_code == 401


def test_a_prediction_returns_risk_model_version_and_card_hash(service):
    body = _body(service, 3)
    with _client(service) as client:
        response = client.post("/v1/predict", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    trained = service["trained"]
    assert answer["model"] == {"name": MODEL, "version": trained.outcome.model.version,
                               "source": scoring.SOURCE_ALIAS, "card_sha256": CARD}
    assert 0.0 <= answer["risk"] <= 1.0
    assert answer["operating_threshold"] == pytest.approx(trained.outcome.operating_threshold)
    assert answer["flagged"] == (answer["risk"] >= answer["operating_threshold"])
    assert answer["input_sha256"] == scoring.input_sha256(body["features"], trained.spec)
    # the same score the model gives in process, and the same as its training-time test score if held out
    model = scoring.load_scoring_model(scoring.resolve_champion(COHORT), trained.spec)
    import pandas as pd

    assert answer["risk"] == pytest.approx(float(model.score(pd.DataFrame([body["features"]]))[0]), abs=1e-12)


@pytest.mark.parametrize(
    "change, field, kind",
    [
        (lambda f: f.update(time_in_hospital=-1), "features.time_in_hospital", "greater_than_equal"),
        (lambda f: f.update(num_medications="many"), "features.num_medications", "float_parsing"),
        (lambda f: f.pop("insulin"), "features.insulin", "missing"),
        (lambda f: f.update(patient_nbr="8222157"), "features.patient_nbr", "extra_forbidden"),
        (lambda f: f.update(admission_type=1), "features.admission_type", "string_type"),
    ],
)
def test_invalid_input_is_a_422_naming_the_field_without_echoing_it(service, change, field, kind):
    body = _body(service, 1)
    change(body["features"])
    with _client(service) as client:
        response = client.post("/v1/predict", json=body)
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert {"field": field, "type": kind} in [{"field": e["field"], "type": e["type"]} for e in errors]
    assert "8222157" not in response.text and "many" not in response.text


def test_a_body_that_is_not_json_is_a_422(service):
    with _client(service) as client:
        response = client.post("/v1/predict", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["type"] == "json_invalid"


def test_every_request_is_in_the_log_and_the_chain_verifies(service):
    with _client(service) as client:
        answers = [client.post("/v1/predict", json=_body(service, i)).json() for i in range(10, 20)]
        rejected = client.post("/v1/predict", json={"features": {}})
    with _client(service, key=None) as anonymous:
        anonymous.post("/v1/predict", json=_body(service))
    records = _log_records(service)
    by_request = {r["record"].get("request_id"): r for r in records}
    for answer in answers:
        entry = by_request[answer["prediction_id"]]
        assert entry["kind"] == "prediction"
        assert entry["hash"] == answer["log"]["hash"] and entry["seq"] == answer["log"]["seq"]
        assert entry["record"]["response"]["risk"] == answer["risk"]
        assert entry["record"]["caller"]["key_id"] == service["key_id"]
    refused = by_request[rejected.json()["request_id"]]
    assert refused["kind"] == "rejected" and refused["record"]["response"]["status"] == 422
    assert "features.insulin" in refused["record"]["response"]["error_fields"]
    assert any(r["kind"] == "rejected" and r["record"]["response"]["status"] == 401 for r in records)
    raw = b"".join(p.read_bytes() for p in prediction_log.list_segments(service["log_dir"]))
    assert service["key"].encode() not in raw, "the API key must never be logged"
    result = prediction_log.verify_log(service["log_dir"])
    assert result.ok, result.problems


def test_a_newly_promoted_champion_is_served_without_downtime(service):
    trained = service["trained"]
    client_mlflow = MlflowClient()
    source = client_mlflow.get_model_version(MODEL, trained.outcome.model.version).source
    v2 = client_mlflow.create_model_version(MODEL, source, run_id=trained.outcome.model.run_id).version
    statuses, versions, stop = [], [], threading.Event()

    def load() -> None:
        with _client(service) as client:
            while not stop.is_set():
                response = client.post("/v1/predict", json=_body(service, 5))
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.append(response.json()["model"]["version"])

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(1.0)
        with warehouse.connect(trained.workspace.warehouse) as con:
            registry.promote(con, MODEL, v2, actor="test", reason="hot-swap test", policy_sha256="0" * 64)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not versions or versions[-1] != str(v2)):
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert set(statuses) == {200}, "no request may fail during the swap"
    assert versions[0] == trained.outcome.model.version and versions[-1] == str(v2)
    with _client(service) as client:
        model = client.get("/v1/model").json()["model"]
    assert (model["model_version"], model["model_source"]) == (str(v2), scoring.SOURCE_ALIAS)
    assert model["model_card_sha256"] is None  # v2 has no card yet: null, not the old card's hash


def test_a_withdrawn_champion_stops_being_served(service):
    """Removing the alias withdraws the model in service: 503 with the reason, no prediction."""
    client_mlflow = MlflowClient()
    version = client_mlflow.get_registered_model(MODEL).aliases["champion"]
    client_mlflow.delete_registered_model_alias(MODEL, "champion")
    try:
        deadline = time.monotonic() + 30
        health = httpx.get(f"{service['server'].url}/healthz", timeout=5)
        while time.monotonic() < deadline and health.status_code == 200:
            time.sleep(0.2)
            health = httpx.get(f"{service['server'].url}/healthz", timeout=5)
        assert health.status_code == 503 and health.json()["reason"] == scoring.no_champion_reason(COHORT)
        with _client(service) as client:
            response = client.post("/v1/predict", json=_body(service, 7))
        assert response.status_code == 503 and "risk" not in response.json()
        assert response.json()["detail"] == scoring.no_champion_reason(COHORT)
    finally:
        client_mlflow.set_registered_model_alias(MODEL, "champion", version)
    assert service["server"].wait_ready(timeout=30)["model_version"] == str(version)


def test_concurrent_requests_are_all_logged_once_and_the_chain_verifies(service):
    """Many callers at once (batched scoring, group commit): every answer is in the log with its own seq,
    the risk the model gives in process, and the chain verifies; concurrent rejections are logged too."""
    import pandas as pd

    spec = service["trained"].spec
    answers: list[tuple[int, dict]] = []
    rejected: list[str] = []
    lock = threading.Lock()

    def caller(k: int) -> None:
        with _client(service) as client:
            for j in range(12):
                i = (k * 12 + j) % 150
                if j == 5:
                    response = client.post("/v1/predict", json={"features": {}})
                    assert response.status_code == 422
                    with lock:
                        rejected.append(response.json()["request_id"])
                    continue
                response = client.post("/v1/predict", json=_body(service, i))
                assert response.status_code == 200, response.text
                with lock:
                    answers.append((i, response.json()))

    callers = [threading.Thread(target=caller, args=(k,)) for k in range(16)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(timeout=120)
    assert len(answers) == 16 * 11 and len(rejected) == 16
    records = _log_records(service)
    by_request = {r["record"].get("request_id"): r for r in records}
    assert len({a["log"]["seq"] for _, a in answers}) == len(answers)
    model = scoring.load_scoring_model(scoring.resolve_champion(COHORT), spec)
    expected = model.score(pd.DataFrame([_body(service, i)["features"] for i, _ in answers]))
    for (i, answer), risk in zip(answers, expected):
        entry = by_request[answer["prediction_id"]]
        assert (entry["kind"], entry["seq"], entry["hash"]) == ("prediction", answer["log"]["seq"], answer["log"]["hash"])
        assert entry["record"]["input_sha256"] == answer["input_sha256"]
        assert answer["risk"] == entry["record"]["response"]["risk"] == float(risk)  # exactly the pipeline's
    assert all(by_request[r]["kind"] == "rejected" for r in rejected)
    seqs = [r["seq"] for r in records if r["record"].get("request_id") in by_request]
    assert len(seqs) == len(set(seqs))
    result = prediction_log.verify_log(service["log_dir"])
    assert result.ok, result.problems


def test_the_service_scores_with_the_compiled_scorer(service):
    with _client(service) as client:
        assert client.get("/v1/model").json()["model"]["scorer"] == "compiled"


def test_kill_9_under_load_loses_no_acknowledged_prediction(service):
    server = service["server"]
    acknowledged: list[tuple[str, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(offset: int) -> None:
        with _client(service) as client:
            i = offset
            while not stop.is_set():
                try:
                    response = client.post("/v1/predict", json=_body(service, i % 150))
                except httpx.TransportError:
                    return
                if response.status_code == 200:
                    answer = response.json()
                    with lock:
                        acknowledged.append((answer["prediction_id"], answer["log"]["hash"]))
                i += 7

    workers = [threading.Thread(target=load, args=(k,)) for k in range(8)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(acknowledged) < 150:
        time.sleep(0.05)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)
    stop.set()
    for w in workers:
        w.join(timeout=30)
    assert len(acknowledged) >= 150
    logged = {(r["record"].get("request_id"), r["hash"]) for r in _log_records(service) if r["kind"] == "prediction"}
    missing = [a for a in acknowledged if a not in logged]
    assert missing == [], f"{len(missing)} acknowledged predictions missing from the log"
    result = prediction_log.verify_log(service["log_dir"])
    assert result.ok, result.problems  # at most a torn, never-acknowledged last line
    newest = result.segments[-1]
    assert not newest.closed  # killed: no segment_close entry
