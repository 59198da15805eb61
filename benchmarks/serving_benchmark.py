"""Scoring service benchmark: throughput and latency beside ``mlflow models serve``, and durability.

Run from the project root (not a test; it takes a few minutes)::

    uv run python -m benchmarks.serving_benchmark                      # defaults below
    uv run python -m benchmarks.serving_benchmark --encounters 20000 --duration 10 --kills 3 --out bench.json

What it does, in one run so the two servers are compared under the same machine load:

1. builds a temporary workspace: synthetic encounters, landed and validated, features, split, the
   gradient-boosted candidate fitted and registered in a temporary MLflow registry, promoted to
   ``champion``;
2. starts ``clinical-mlops serve`` (prediction log on, fsync per group commit) and
   ``mlflow models serve --env-manager local`` on the same registered version, both on 127.0.0.1
   with one worker process — and a second MLflow server with ``OMP_NUM_THREADS=1`` (the thread
   setting our scorer uses), to separate the effect of OpenMP threads from the rest;
3. at each concurrency (default 1, 8, 32) sends single-encounter requests to each server in turn
   for ``--duration`` seconds (after a warm-up) and reports throughput, p50 and p99 latency and the
   ratio ours / MLflow's;
4. durability: ``--kills`` times, starts the service, loads it at concurrency 32, sends SIGKILL
   mid-load, and counts acknowledged predictions missing from the log (must be 0); the log's chain
   is verified after each kill.

Note on what is compared: our endpoint authenticates, validates against the cohort schema,
returns the risk with model version and card hash, and appends an fsync'ed, hash-chained log
entry before answering; MLflow's ``/invocations`` applies the signature and returns the pyfunc
prediction (for this sklearn model, the class label), with no authentication and no log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from clinical_mlops.core.settings import PROJECT_ROOT, switch_off_telemetry

switch_off_telemetry()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# workspace
# ---------------------------------------------------------------------------------------------


def build_workspace(root: Path, n_encounters: int, max_iter: int, seed: int) -> dict:
    """Synthetic data → warehouse → features → candidate registered and promoted to champion."""
    from clinical_mlops.scoring import api_keys
    from clinical_mlops.ingestion import deid, landing, synthetic, uci
    from clinical_mlops.features import build as features
    from clinical_mlops.training import modelling, fit as training
    from clinical_mlops.registry import aliases as registry
    from clinical_mlops.validation import rules as validation
    from clinical_mlops.core import warehouse
    from clinical_mlops.features.cohort import load_cohort

    os.environ.setdefault("CLINICAL_MLOPS_PSEUDONYM_KEY", "benchmark-key-not-secret")
    tracking_uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    artifacts = root / "mlflow" / "artifacts"
    spec = load_cohort("readmission_30d")
    started = time.perf_counter()
    encounters = synthetic.generate_encounters(synthetic.SyntheticConfig(n_encounters=n_encounters, seed=seed))
    paths = uci.write_sequential_extracts(encounters, root / "landing", 2, prefix="bench")
    key, _ = deid.pseudonym_key_from_env()
    with warehouse.connect(root / "warehouse.duckdb") as con:
        for path in paths:
            landing.land_extract(con, path)
            validation.validate_extract(con, path.name, pseudonym_key=key)
        features.build_features(con, spec)
        features.assign_split(con, spec)
        params = modelling.GradientBoostingParams(max_iter=max_iter, seed=seed)
        outcome = training.train_and_register(
            con, spec, role="candidate", pipeline=modelling.build_gradient_boosting(spec, params),
            params=params.as_dict(), tracking_uri=tracking_uri, artifact_root=artifacts,
        )
        registry.promote(con, outcome.model.name, outcome.model.version, actor="benchmark",
                         reason="serving benchmark", policy_sha256="0" * 64)
        rows = con.execute(
            f"SELECT encounter_id, {', '.join(spec.features)} FROM {spec.features_table} USING SAMPLE 500 ROWS "
            "ORDER BY encounter_id"
        ).df()
    api_key, _ = api_keys.create_key(root / "serving" / "api_keys.json", "benchmark")
    from clinical_mlops.scoring import champion as scoring

    bodies = []
    for row in rows.to_dict("records"):
        feats = scoring.canonical_features(row, spec)
        bodies.append({"ours": {"encounter_id": int(row["encounter_id"]), "features": feats},
                       "mlflow": {"dataframe_records": [feats]}})
    _say(f"workspace ready in {time.perf_counter() - started:.0f}s: {outcome.model.name} v{outcome.model.version}, "
         f"{outcome.train_rows} training rows, {max_iter} boosting iterations")
    return {"tracking_uri": tracking_uri, "model": outcome.model, "api_key": api_key, "bodies": bodies,
            "env": {**os.environ, "CLINICAL_MLOPS_DATA_DIR": str(root), "MLFLOW_TRACKING_URI": tracking_uri,
                    "CLINICAL_MLOPS_SCHEDULES": "stopped"}}


# ---------------------------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------------------------


class Process:
    def __init__(self, name: str, command: list[str], env: dict, health: str, log: Path) -> None:
        self.name = name
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.health = health
        self.log = open(log, "ab")
        self.process = subprocess.Popen(
            [part.replace("{port}", str(self.port)) for part in command], cwd=PROJECT_ROOT, env=env,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, timeout: float = 300.0) -> float:
        import httpx

        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.url + self.health, timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"{self.name} not ready after {timeout}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()


def start_ours(ws: dict, root: Path) -> Process:
    return Process(
        "clinical-mlops serve",
        [sys.executable, "-m", "clinical_mlops.cli.serving", "serve", "--port", "{port}", "--cohort",
         "readmission_30d", "--log-level", "warning"],
        ws["env"], "/healthz", root / "ours.log",
    )


def start_mlflow(ws: dict, root: Path, *, single_thread: bool = False) -> Process:
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    model = ws["model"]
    # mlflow execs `uvicorn` from PATH: put this environment's bin first (what `uv run` does)
    env = {**ws["env"], "PATH": f"{Path(sys.executable).parent}{os.pathsep}{ws['env'].get('PATH', '')}"}
    if single_thread:
        env["OMP_NUM_THREADS"] = "1"
    return Process(
        "mlflow models serve" + (" (OMP_NUM_THREADS=1)" if single_thread else ""),
        [mlflow, "models", "serve", "-m", f"models:/{model.name}/{model.version}", "--env-manager", "local",
         "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"],
        env, "/ping", root / ("mlflow_1thread.log" if single_thread else "mlflow.log"),
    )


# ---------------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------------


async def _load(url: str, path: str, bodies: list[dict], headers: dict, concurrency: int, duration: float,
                warmup: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as client:
        start = time.perf_counter()
        measure_from = start + warmup
        stop_at = measure_from + duration

        async def worker(offset: int) -> None:
            nonlocal errors
            i = offset
            while True:
                now = time.perf_counter()
                if now >= stop_at:
                    return
                t0 = time.perf_counter()
                try:
                    response = await client.post(path, json=bodies[i % len(bodies)])
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                t1 = time.perf_counter()
                if t0 >= measure_from and t1 <= stop_at:
                    if ok:
                        latencies.append(t1 - t0)
                    else:
                        errors += 1
                i += concurrency

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return {"requests": len(latencies), "errors": errors, "throughput_rps": len(latencies) / duration,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan")}


def measure(server: Process, kind: str, ws: dict, concurrency: int, duration: float, warmup: float) -> dict:
    bodies = [b[kind] for b in ws["bodies"]]
    if kind == "ours":
        return asyncio.run(_load(server.url, "/v1/predict", bodies, {"X-API-Key": ws["api_key"]}, concurrency,
                                 duration, warmup))
    return asyncio.run(_load(server.url, "/invocations", bodies, {"Content-Type": "application/json"}, concurrency,
                             duration, warmup))


# ---------------------------------------------------------------------------------------------
# durability
# ---------------------------------------------------------------------------------------------


def kill_under_load(ws: dict, root: Path, *, concurrency: int = 32, load_seconds: float = 3.0) -> dict:
    """Load the service, SIGKILL it, and count acknowledged predictions missing from the log."""
    import httpx

    from clinical_mlops.scoring import prediction_log

    server = start_ours(ws, root)
    server.wait_ready()
    acknowledged: list[tuple[str, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(offset: int) -> None:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": ws["api_key"]}, timeout=30) as client:
            i = offset
            while not stop.is_set():
                try:
                    response = client.post("/v1/predict", json=ws["bodies"][i % len(ws["bodies"])]["ours"])
                except httpx.HTTPError:
                    return
                if response.status_code == 200:
                    answer = response.json()
                    with lock:
                        acknowledged.append((answer["prediction_id"], answer["log"]["hash"]))
                i += concurrency

    threads = [threading.Thread(target=load, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    time.sleep(load_seconds)
    with lock:
        acked_before_kill = len(acknowledged)
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    server.log.close()
    directory = prediction_log.cohort_directory(root / "serving" / "prediction_log", "readmission_30d")
    logged = set()
    for path in prediction_log.list_segments(directory):
        for _, raw, terminated in prediction_log.iter_lines(path):
            if terminated:
                entry = json.loads(raw)
                logged.add((entry["record"].get("request_id"), entry["hash"]))
    missing = sum(1 for item in acknowledged if item not in logged)
    verification = prediction_log.verify_log(directory)
    return {"acknowledged": len(acknowledged), "acknowledged_before_kill_signal": acked_before_kill,
            "missing_from_log": missing, "chain_ok": verification.ok,
            "torn_tail": any(s.torn_tail for s in verification.segments)}


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def markdown(results: dict) -> str:
    lines = [
        "| concurrency | server | req/s | p50 ms | p99 ms | errors |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for row in results["load"]:
        for kind, label in (("ours", "clinical-mlops serve (auth, validation, fsync'ed log)"),
                            ("mlflow", "mlflow models serve --env-manager local"),
                            ("mlflow_1thread", "same, OMP_NUM_THREADS=1")):
            if kind not in row:
                continue
            m = row[kind]
            lines.append(f"| {row['concurrency']} | {label} | {m['throughput_rps']:.0f} | {m['p50_ms']:.1f} | "
                         f"{m['p99_ms']:.1f} | {m['errors']} |")
        lines.append(f"| {row['concurrency']} | **ratio ours / mlflow** | **{row['throughput_ratio']:.2f}×** | "
                     f"{row['p50_ratio']:.2f}× | {row['p99_ratio']:.2f}× | |")
        if "throughput_ratio_1thread" in row:
            lines.append(f"| {row['concurrency']} | ratio ours / mlflow (1 thread) | "
                         f"{row['throughput_ratio_1thread']:.2f}× | | | |")
    kills = results["durability"]
    lines.append("")
    lines.append(f"Durability: {len(kills)} × kill -9 under load at concurrency 32 — acknowledged "
                 f"{sum(k['acknowledged'] for k in kills)}, missing from the log "
                 f"**{sum(k['missing_from_log'] for k in kills)}**, chain verified after every kill: "
                 f"{all(k['chain_ok'] for k in kills)}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encounters", type=int, default=20_000)
    parser.add_argument("--max-iter", type=int, default=300, help="boosting iterations of the served model")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per server and level")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--no-single-thread-mlflow", action="store_true",
                        help="skip the third server (MLflow with OMP_NUM_THREADS=1, the thread setting ours uses)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    root = args.workdir or Path(tempfile.mkdtemp(prefix="serving_benchmark_"))
    root.mkdir(parents=True, exist_ok=True)
    ws = build_workspace(root, args.encounters, args.max_iter, args.seed)
    servers = {"ours": start_ours(ws, root), "mlflow": start_mlflow(ws, root)}
    if not args.no_single_thread_mlflow:
        servers["mlflow_1thread"] = start_mlflow(ws, root, single_thread=True)
    results: dict = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average_at_start": os.getloadavg()},
        "settings": vars(args) | {"workdir": str(root), "out": str(args.out) if args.out else None},
        "load": [], "durability": [],
    }
    try:
        results["startup_seconds"] = {kind: round(server.wait_ready(), 1) for kind, server in servers.items()}
        _say(f"servers ready: {results['startup_seconds']}")
        for concurrency in args.concurrency:
            row = {"concurrency": concurrency}
            for kind, server in servers.items():
                row[kind] = measure(server, "ours" if kind == "ours" else "mlflow", ws, concurrency, args.duration,
                                    args.warmup)
                _say(f"c={concurrency:<3} {kind:<6} {row[kind]['throughput_rps']:7.1f} req/s  "
                     f"p50 {row[kind]['p50_ms']:7.1f} ms  p99 {row[kind]['p99_ms']:7.1f} ms  "
                     f"errors {row[kind]['errors']}")
            row["throughput_ratio"] = row["ours"]["throughput_rps"] / row["mlflow"]["throughput_rps"]
            row["p50_ratio"] = row["ours"]["p50_ms"] / row["mlflow"]["p50_ms"]
            row["p99_ratio"] = row["ours"]["p99_ms"] / row["mlflow"]["p99_ms"]
            if "mlflow_1thread" in row:
                row["throughput_ratio_1thread"] = row["ours"]["throughput_rps"] / row["mlflow_1thread"]["throughput_rps"]
            results["load"].append(row)
    finally:
        for server in servers.values():
            server.stop()
    for i in range(args.kills):
        outcome = kill_under_load(ws, root)
        _say(f"kill -9 #{i + 1}: {outcome}")
        results["durability"].append(outcome)
    results["load_average_at_end"] = os.getloadavg()
    table = markdown(results)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str))
    return 0 if all(k["missing_from_log"] == 0 and k["chain_ok"] for k in results["durability"]) else 1


if __name__ == "__main__":
    sys.exit(main())
