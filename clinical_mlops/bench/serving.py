"""The scoring service beside ``mlflow models serve`` on the same registered version, and its durability.

``measure_serving(work)`` builds a workspace (synthetic encounters landed, validated, features,
split, the candidate with the project's parameters registered and promoted to ``champion``),
starts ``clinical-mlops serve`` (fsync'ed, hash-chained prediction log) and ``mlflow models serve
--env-manager local`` (no network) on 127.0.0.1 with one worker each, and at concurrency 1 and 8
sends the same single-encounter requests to each in turn, alternating which goes first, for
``rounds`` rounds; it reports the median req/s and p50/p95 latency per server and their ratio.
Then it SIGKILLs the service under load and counts acknowledged predictions missing from the log.
``quick``: 3,000 encounters instead of 20,000 (same model and parameters), one round of 120 requests, one kill.

The load generator is a minimal asyncio HTTP/1.1 keep-alive client (one connection per concurrent
caller), the same for both servers: on a 2-core machine a heavier client (httpx) spends more CPU per
request than the servers do, and its cost would dilute what is compared.

What is compared: ours authenticates (``X-API-Key``), validates against the cohort schema, scores,
appends the request to the hash-chained log and fsyncs it before answering with the risk, model
version and card hash; MLflow's ``/invocations`` enforces the signature and returns the pyfunc
prediction (the class label) with no authentication and no log.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["COHORT", "CONCURRENCY", "Server", "build_workspace", "kill_under_load", "load", "measure_serving",
           "start_mlflow", "start_ours"]

SOURCE = "synthetic_diabetes130"
COHORT = f"{SOURCE}_readmission_30d"
CONCURRENCY = (1, 8)
PSEUDONYM_KEY = "bench-key-not-secret"
COMPARED = ("ours: X-API-Key check, schema validation, risk with model version and card hash, the request appended "
            "to the hash-chained prediction log and fsync'ed before the answer; mlflow models serve --env-manager "
            "local (1 worker): signature enforcement, the pyfunc prediction (class label), no authentication, no log")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the workspace --------------------------------------------------------------------------------


def build_workspace(root: Path, *, encounters: int = 20_000, max_iter: int | None = None, seed: int = 7) -> dict:
    """Synthetic extracts → warehouse → features → split → the candidate registered and promoted."""
    from threadpoolctl import threadpool_limits

    from clinical_mlops.core import warehouse
    from clinical_mlops.features import build as features
    from clinical_mlops.features.cohort import load_cohort
    from clinical_mlops.ingestion import landing, uci
    from clinical_mlops.ingestion.synthetic import SyntheticConfig, generate_encounters
    from clinical_mlops.registry import aliases
    from clinical_mlops.scoring import api_keys
    from clinical_mlops.scoring import champion as scoring
    from clinical_mlops.sources.contract import load_source
    from clinical_mlops.training import fit, modelling
    from clinical_mlops.validation import rules

    root.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    (root / "mlflow").mkdir(exist_ok=True)
    spec, source = load_cohort(COHORT), load_source(SOURCE)
    frame = generate_encounters(SyntheticConfig(n_encounters=encounters, seed=seed))
    paths = uci.write_sequential_extracts(frame, root / "landing" / SOURCE, 2, prefix="bench")
    params = modelling.GradientBoostingParams(seed=seed, **({} if max_iter is None else {"max_iter": max_iter}))
    with warehouse.connect(root / "warehouse.duckdb") as con, threadpool_limits(limits=1):
        for path in paths:
            landing.land_extract(con, path, source)
            rules.validate_extract(con, source, path.name, pseudonym_key=PSEUDONYM_KEY.encode())
        features.build_features(con, spec)
        features.assign_split(con, spec)
        outcome = fit.train_and_register(
            con, spec, role="candidate", pipeline=modelling.build_gradient_boosting(spec, params),
            params=params.as_dict(), tracking_uri=tracking_uri, artifact_root=root / "mlflow" / "artifacts",
        )
        aliases.promote(con, outcome.model.name, outcome.model.version, actor="clinical-mlops bench",
                        reason="benchmark only: serving speed", policy_sha256="0" * 64)
        rows = con.execute(f"SELECT encounter_id, {', '.join(spec.features)} FROM {spec.features_table} "
                           "ORDER BY hash(encounter_id) LIMIT 500").df()
    api_key, _ = api_keys.create_key(root / "serving" / "api_keys.json", "benchmark")
    bodies = []
    for row in rows.to_dict("records"):
        feats = scoring.canonical_features(row, spec)
        bodies.append({"ours": json.dumps({"encounter_id": int(row["encounter_id"]), "features": feats}).encode(),
                       "mlflow": json.dumps({"dataframe_records": [feats]}).encode()})
    env = {**os.environ, "CLINICAL_MLOPS_DATA_DIR": str(root), "MLFLOW_TRACKING_URI": tracking_uri,
           "CLINICAL_MLOPS_SCHEDULES": "stopped", "CLINICAL_MLOPS_PSEUDONYM_KEY": PSEUDONYM_KEY,
           "CLINICAL_MLOPS_PREDICTION_LOG": str(root / "serving" / "prediction_log"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return {"root": root, "model": {"name": outcome.model.name, "version": str(outcome.model.version)},
            "max_iter": params.max_iter, "train_rows": outcome.train_rows, "api_key": api_key, "bodies": bodies,
            "env": env, "log_dir": root / "serving" / "prediction_log" / COHORT}


# --- the servers ----------------------------------------------------------------------------------


class Server:
    """One server process on 127.0.0.1 in its own session (so a kill reaches its children)."""

    def __init__(self, name: str, command: list[str], env: dict, health: str, log: Path,
                 cwd: Path | None = None) -> None:
        self.name, self.health, self.port = name, health, _free_port()
        self.log = open(log, "ab")
        self.started = time.monotonic()
        self.process = subprocess.Popen([c.replace("{port}", str(self.port)) for c in command], env=env, cwd=cwd,
                                        stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 300.0) -> float:
        import urllib.error
        import urllib.request

        while time.monotonic() - self.started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{self.health}", timeout=2) as answer:
                    if answer.status == 200:
                        return round(time.monotonic() - self.started, 2)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"{self.name} not ready after {timeout}s")

    def stop(self, sig: int = signal.SIGINT) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()


def _project_root() -> Path:
    from clinical_mlops.core.settings import PROJECT_ROOT

    return PROJECT_ROOT


def start_ours(ws: dict, tag: str = "ours", *, tree: Path | None = None) -> Server:
    """``clinical-mlops serve``; ``tree``: serve the ``clinical_mlops`` of another checkout (a "before")."""
    env = ws["env"] if tree is None else {**ws["env"], "PYTHONPATH": str(tree)}
    return Server("clinical-mlops serve", [sys.executable, "-m", "clinical_mlops.cli.serving", "serve", "--port",
                                           "{port}", "--cohort", COHORT, "--log-level", "warning"],
                  env, "/healthz", ws["root"] / f"{tag}.log", cwd=tree or _project_root())


def start_mlflow(ws: dict) -> Server:
    model = ws["model"]
    return Server("mlflow models serve", [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m",
                                          f"models:/{model['name']}/{model['version']}", "--env-manager", "local",
                                          "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"],
                  ws["env"], "/ping", ws["root"] / "mlflow.log")


# --- the load -------------------------------------------------------------------------------------


def _request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n").encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" not in fields:
        raise ValueError(f"response without Content-Length: {lines[0]}")
    return int(lines[0].split()[1]), await reader.readexactly(int(fields["content-length"]))


async def _callers(port: int, requests: list[bytes], concurrency: int, on_answer=None) -> dict:
    """``requests`` sent by ``concurrency`` keep-alive connections; latency of each answer, wall time."""
    latencies: list[float] = []
    errors = 0
    queue = iter(requests)

    async def caller() -> None:
        nonlocal errors
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            errors += 1
            return
        try:
            for request in queue:
                t0 = time.perf_counter()
                status, body = await _exchange(reader, writer, request)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    errors += 1
                elif on_answer is not None:
                    on_answer(body)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return {"seconds": time.perf_counter() - started, "latencies": latencies, "errors": errors}


def load(server: Server, kind: str, ws: dict, concurrency: int, requests: int, warmup: int = 30) -> dict:
    """``requests`` single-encounter requests at ``concurrency``: req/s, p50 and p95 latency, errors.

    ``kind``: ``ours`` (``/v1/predict`` with the API key) or ``mlflow`` (``/invocations``)."""
    path, headers = (("/v1/predict", {"X-API-Key": ws["api_key"]}) if kind == "ours"
                     else ("/invocations", {}))
    bodies = [_request(path, b[kind], headers) for b in ws["bodies"]]
    stream = [bodies[i % len(bodies)] for i in range(requests)]
    asyncio.run(_callers(server.port, stream[:warmup], concurrency))
    run = asyncio.run(_callers(server.port, stream, concurrency))
    latencies = sorted(run["latencies"])

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 2)

    return {"requests": len(latencies), "errors": run["errors"], "req_per_s": round(len(latencies) / run["seconds"], 1),
            "p50_ms": pct(0.50), "p95_ms": pct(0.95)}


# --- durability -----------------------------------------------------------------------------------


def kill_under_load(ws: dict, *, concurrency: int = 8, seconds: float = 3.0, tag: str = "kill",
                    server: Server | None = None) -> dict:
    """Load the service (``server``, or a fresh one), SIGKILL it, count acknowledged predictions missing
    from the log, verify the chain."""
    from clinical_mlops.scoring import prediction_log

    if server is None:
        server = start_ours(ws, tag)
        server.wait_ready()
    acknowledged: list[tuple[str, str]] = []

    def note(body: bytes) -> None:
        answer = json.loads(body)
        acknowledged.append((answer["prediction_id"], answer["log"]["hash"]))

    request = [_request("/v1/predict", b["ours"], {"X-API-Key": ws["api_key"]}) for b in ws["bodies"]]

    async def run() -> None:
        callers = asyncio.ensure_future(_callers(server.port, [request[i % len(request)] for i in range(10**6)],
                                                 concurrency, note))
        await asyncio.sleep(seconds)
        os.killpg(server.process.pid, signal.SIGKILL)
        await callers

    asyncio.run(run())
    server.stop()
    logged = set()
    for path in prediction_log.list_segments(ws["log_dir"]):
        for _, raw, terminated in prediction_log.iter_lines(path):
            if terminated:
                entry = json.loads(raw)
                logged.add((entry["record"].get("request_id"), entry["hash"]))
    verification = prediction_log.verify_log(ws["log_dir"])
    return {"acknowledged": len(acknowledged), "missing_from_log": sum(a not in logged for a in acknowledged),
            "chain_ok": verification.ok, "torn_tail": any(s.torn_tail for s in verification.segments)}


# --- the measurement ------------------------------------------------------------------------------


def _scorer(server: Server, ws: dict) -> str | None:
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/v1/model", headers={"X-API-Key": ws["api_key"]})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return (json.loads(answer.read()).get("model") or {}).get("scorer")


def measure_serving(work: Path, *, requests: int = 800, quick: bool = False, rounds: int = 2,
                    concurrency: Sequence[int] = CONCURRENCY, kills: int | None = None,
                    baseline: Path | None = None, say: Callable[[str], None] = _say) -> dict:
    """Ours and ``mlflow models serve`` on the same version, alternated; ratios; the kill -9 check.

    ``baseline``: a source tree (e.g. ``git archive`` of an earlier commit) whose service is measured
    too, as ``before``, in the same rounds.
    """
    work = Path(work)
    if quick:
        requests, rounds, kills = min(requests, 120), 1, 1 if kills is None else kills
    kills = 2 if kills is None else kills
    started = time.perf_counter()
    ws = build_workspace(work / "serving", encounters=3_000 if quick else 20_000)
    say(f"serving workspace ready in {time.perf_counter() - started:.0f} s: {ws['model']['name']} "
        f"v{ws['model']['version']}, {ws['train_rows']} training rows, {ws['max_iter']} iterations")
    servers = {"ours": start_ours(ws), "mlflow": start_mlflow(ws)}
    if baseline is not None:
        servers["before"] = start_ours(ws, "before", tree=Path(baseline))
    result: dict = {"model": ws["model"], "max_iter": ws["max_iter"], "train_rows": ws["train_rows"], "quick": quick,
                    "requests_per_level": requests, "rounds": rounds, "load_average_at_start": os.getloadavg(),
                    "compared": COMPARED, "levels": {}}
    runs: dict[tuple[int, str], list[dict]] = {}
    kinds = list(servers)
    try:
        result["startup_seconds"] = {kind: server.wait_ready() for kind, server in servers.items()}
        result["scorer"] = _scorer(servers["ours"], ws)
        for r in range(rounds):
            order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]  # who goes first rotates
            for c in concurrency:
                for kind in order:
                    m = load(servers[kind], "mlflow" if kind == "mlflow" else "ours", ws, c, requests)
                    runs.setdefault((c, kind), []).append(m)
                    say(f"round {r + 1} c={c} {kind:<6} {m['req_per_s']:7.1f} req/s  p50 {m['p50_ms']:6.1f} ms  "
                        f"p95 {m['p95_ms']:6.1f} ms  errors {m['errors']}")
        loaded = servers.pop("ours")  # its first kill is the durability check's (no second start-up)
    finally:
        for server in servers.values():
            server.stop()
    for c in concurrency:
        level: dict = {}
        for kind in kinds:
            samples = runs[(c, kind)]
            level[kind] = {key: round(statistics.median(s[key] for s in samples), 2)
                           for key in ("req_per_s", "p50_ms", "p95_ms")}
            level[kind] |= {"errors": sum(s["errors"] for s in samples), "runs": samples}
        level["ratio_req_per_s"] = round(level["ours"]["req_per_s"] / level["mlflow"]["req_per_s"], 2)
        level["ratio_p50"] = round(level["ours"]["p50_ms"] / level["mlflow"]["p50_ms"], 3)
        if "before" in level:
            level["ratio_before_req_per_s"] = round(level["before"]["req_per_s"] / level["mlflow"]["req_per_s"], 2)
        result["levels"][str(c)] = level
    outcomes = [kill_under_load(ws, tag=f"kill{i}", server=loaded if i == 0 else None) for i in range(kills)]
    if not kills:
        loaded.stop()
    result["durability"] = {
        "kills": outcomes, "acknowledged": sum(o["acknowledged"] for o in outcomes),
        "missing_from_log": sum(o["missing_from_log"] for o in outcomes),
        "chain_ok": all(o["chain_ok"] for o in outcomes),
    }
    result["target_ratio"] = 2.0
    result["target_met"] = (all(lv["ratio_req_per_s"] >= 2.0 for lv in result["levels"].values())
                            and result["durability"]["missing_from_log"] == 0 and result["durability"]["chain_ok"])
    result["load_average_at_end"] = os.getloadavg()
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result
