"""Audit-ledger benchmark: append throughput and verification time for a large ledger.

    uv run python benchmarks/ledger_benchmark.py                  # 1M-entry verify, ~5 minutes
    uv run python benchmarks/ledger_benchmark.py --entries 100000 --json out/ledger_bench.json

Measures, on a temporary folder:

* single-entry appends, each under its own lock with fsync of the ledger and the head
  (what a sensor or an asset does per event), and the same without fsync;
* batched appends (``append_many``, one lock and one fsync per batch, as ``record_run`` does);
* two processes appending at once (the chain must stay valid);
* a ledger of ``--entries`` entries of realistic size (a materialization with summarised
  metadata, about 700 bytes a line): the time to verify it (chain + signed head), to mirror it
  into DuckDB, to verify it against the mirror, and ``clinical-mlops audit verify`` end to end.

Timings are wall-clock on whatever else the machine is doing: compare figures from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import duckdb

from clinical_mlops.audit import ledger

os.environ.setdefault(ledger.KEY_ENV, "benchmark-ledger-key")


def _payload(i: int) -> dict:
    return {
        "run_id": f"{i:08x}-5b1c-4c59-9d0e-6f2a8f7d{i % 10000:04d}",
        "job_name": "training_job",
        "asset_key": "readmission_30d/candidate_model",
        "partition": None,
        "event_time": "2026-11-28T10:41:35.000000Z",
        "data_version": f"{i:064x}",
        "code_version": "1",
        "metadata": {
            "registered_model": "readmission_30d_candidate",
            "model_version": str(i),
            "train_rows": 80_000 + i % 1000,
            "test_rows": 20_000,
            "test_auroc": 0.6612,
            "test_brier": 0.0931,
            "operating_threshold": 0.1533,
            "git_commit": "4ad73ae6bb0a0a8a00df0a47a12b7ee96c0cc3c2",
            "input_extracts": {"sha256": f"{i:064x}", "bytes": 212},
        },
    }


def _event(i: int) -> ledger.Event:
    return ledger.Event("asset_materialization", "asset:readmission_30d/candidate_model", _payload(i),
                        actor="benchmark")


def single_appends(path: Path, n: int, durable: bool) -> float:
    start = time.perf_counter()
    for i in range(n):
        ledger.append_many(path, [_event(i)], durable=durable)
    return n / (time.perf_counter() - start)


def batched_appends(path: Path, batches: int, size: int) -> float:
    start = time.perf_counter()
    for b in range(batches):
        ledger.append_many(path, [_event(b * size + i) for i in range(size)])
    return batches * size / (time.perf_counter() - start)


def concurrent_appends(path: Path, per_process: int) -> tuple[float, bool]:
    go = path.with_suffix(".go")
    script = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        os.environ.setdefault({ledger.KEY_ENV!r}, "benchmark-ledger-key")
        from clinical_mlops.audit import ledger
        while not Path({str(go)!r}).exists():
            time.sleep(0.001)
        for i in range({per_process}):
            ledger.append({str(path)!r}, event_type="writer", subject="bench", payload={{"i": i}})
    """)
    writers = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(2)]
    time.sleep(2.0)  # let both interpreters import
    start = time.perf_counter()
    go.touch()
    for writer in writers:
        writer.wait()
    elapsed = time.perf_counter() - start
    return 2 * per_process / elapsed, ledger.verify(path).ok


def big_ledger(folder: Path, entries: int) -> dict:
    path = folder / "ledger.jsonl"
    batch = 50_000
    start = time.perf_counter()
    written = 0
    while written < entries:
        size = min(batch, entries - written)
        ledger.append_many(path, [_event(written + i) for i in range(size)])
        written += size
    build = time.perf_counter() - start
    figures = {"entries": entries, "file_bytes": path.stat().st_size, "build_seconds": round(build, 1),
               "build_entries_per_second": round(entries / build)}

    start = time.perf_counter()
    result = ledger.verify(path)
    figures["verify_seconds"] = round(time.perf_counter() - start, 2)
    figures["verify_ok"] = result.ok

    con = duckdb.connect(str(folder / "warehouse.duckdb"))
    start = time.perf_counter()
    ledger.mirror_to_duckdb(con, path)
    figures["mirror_seconds"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    result = ledger.verify(path, con=con)
    figures["verify_with_mirror_seconds"] = round(time.perf_counter() - start, 2)
    figures["verify_with_mirror_ok"] = result.ok
    con.close()

    start = time.perf_counter()
    cli = subprocess.run(
        [sys.executable, "-m", "clinical_mlops.cli.audit", "verify", "--ledger", str(path),
         "--warehouse", str(folder / "warehouse.duckdb")],
        capture_output=True, text=True,
    )
    figures["cli_audit_verify_seconds"] = round(time.perf_counter() - start, 2)
    figures["cli_audit_verify_exit"] = cli.returncode
    figures["cli_audit_verify_output"] = cli.stdout.strip().splitlines()[0] if cli.stdout else cli.stderr[-300:]

    lines = path.read_bytes().splitlines(keepends=True)
    lines[len(lines) // 2] = lines[len(lines) // 2].replace(b'"benchmark"', b'"benchmarK"')
    path.write_bytes(b"".join(lines))
    start = time.perf_counter()
    result = ledger.verify(path)
    figures["tampered_verify_seconds"] = round(time.perf_counter() - start, 2)
    figures["tampered_first_bad_seq"] = result.first_bad_seq
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000, help="size of the ledger to verify")
    parser.add_argument("--appends", type=int, default=2_000, help="single-entry appends to time")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    figures: dict = {"python": platform.python_version(), "cpus": os.cpu_count(),
                     "load_average_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="ledger_bench_") as tmp:
        folder = Path(tmp)
        figures["single_append_durable_per_second"] = round(single_appends(folder / "a.jsonl", args.appends, True))
        figures["single_append_no_fsync_per_second"] = round(single_appends(folder / "b.jsonl", args.appends, False))
        figures["batched_append_per_second"] = round(batched_appends(folder / "c.jsonl", 20, 1_000))
        rate, ok = concurrent_appends(folder / "d.jsonl", args.appends // 2)
        figures["two_process_append_per_second"] = round(rate)
        figures["two_process_chain_valid"] = ok
        print(json.dumps(figures, indent=2), flush=True)
        figures["large_ledger"] = big_ledger(folder, args.entries)
    figures["load_average_at_end"] = os.getloadavg()
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0 if figures["large_ledger"]["verify_ok"] and figures["two_process_chain_valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
