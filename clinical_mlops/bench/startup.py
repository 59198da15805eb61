"""What a user waits for before any work starts: ``clinical-mlops --help`` and ``land`` of a small extract.

- ``help``: the wall time of ``clinical-mlops --help`` (a fresh process: interpreter, imports, argparse).
- ``land``: ``clinical-mlops land FILE --source synthetic_diabetes130`` of a generated extract
  (:mod:`clinical_mlops.ingestion.synthetic`, cut by :func:`~clinical_mlops.ingestion.uci.write_sequential_extracts`)
  into a fresh workspace (its own data folder and Dagster instance, see
  :func:`clinical_mlops.bench.compare.workspace_env`): the whole command as a user runs it — preflight,
  Definitions, the Dagster instance created, the ingestion run (landing, validation, quarantine),
  the run recorded in the audit ledger.
- ``land_again``: a second extract of the same size into the same workspace (instance and
  warehouse already there): what every later ``land`` costs.

Each is the median of ``repeats`` fresh child processes. Call :func:`run_startup`, or run
``python -m clinical_mlops.bench.startup --result out.json [--workspace DIR] [--rows N] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from clinical_mlops.bench.measure import Measurement, measure

__all__ = ["LAND_ROWS", "LAND_SOURCE", "cli_argv", "main", "run_startup", "startup_extracts"]

LAND_ROWS = 5_000
LAND_SOURCE = "synthetic_diabetes130"


def cli_argv(*args: str) -> list[str]:
    """argv of the ``clinical-mlops`` console script installed beside this interpreter (else ``-m``)."""
    script = Path(sys.executable).parent / "clinical-mlops"
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "clinical_mlops.cli", *args]


def startup_extracts(directory: Path, rows: int = LAND_ROWS, seed: int = 42) -> list[Path]:
    """Two sequential extracts of ``rows`` synthetic encounters each (the first for ``land``, the
    second for ``land_again``)."""
    from clinical_mlops.ingestion import synthetic, uci

    encounters = synthetic.generate_encounters(synthetic.SyntheticConfig(n_encounters=2 * rows, seed=seed))
    return uci.write_sequential_extracts(encounters, directory, 2, prefix=f"startup_n{rows}")


def _env(root: Path) -> dict[str, str]:
    from clinical_mlops.bench.compare import workspace_env

    return {k: v for k, v in {**os.environ, **workspace_env(root)}.items() if v}  # an empty value = unset


def _printed_json(log: Path) -> dict:
    """The JSON object ``land`` prints on stdout (the log holds stdout and stderr)."""
    lines = log.read_text(errors="replace").splitlines()
    start = next((i for i, line in enumerate(lines) if line == "{"), None)
    end = next((i for i, line in enumerate(lines) if line == "}" and start is not None and i > start), None)
    return json.loads("\n".join(lines[start:end + 1])) if start is not None and end is not None else {}


def _land(root: Path, extract: Path, name: str) -> tuple[Measurement, dict]:
    log = root / f"{name}.log"
    m = measure(name, cli_argv("land", str(extract), "--source", LAND_SOURCE), env=_env(root), cwd=root, log=log)
    printed = _printed_json(log)
    log.write_text("")  # the next measurement of the same name starts an empty log
    return m, printed


def _summary(samples: list[Measurement], **extra) -> dict:
    walls = [m.wall_seconds for m in samples]
    return {"wall_seconds": round(statistics.median(walls), 3), "samples_wall_seconds": walls,
            "peak_rss_mib": max(m.peak_rss_mib for m in samples), **extra}


def run_startup(work: Path, *, rows: int = LAND_ROWS, repeats: int = 1, say=lambda message: None) -> dict:
    """``help``, ``land`` (fresh workspace) and ``land_again`` (the same workspace), each the median of
    ``repeats`` runs; ``land`` also reports what the command printed (status, rows valid and quarantined)."""
    work.mkdir(parents=True, exist_ok=True)
    first, second = startup_extracts(work / "extracts", rows)
    helps, lands, agains, printed = [], [], [], {}
    for i in range(repeats):
        root = work / f"workspace_{i}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        say(f"startup {i + 1}/{repeats}: --help, land, land again …")
        helps.append(measure("help", cli_argv("--help"), env=_env(root), cwd=root))
        m, printed = _land(root, first, "land")
        lands.append(m)
        agains.append(_land(root, second, "land_again")[0])
        say(f"  --help {helps[-1].wall_seconds:.2f} s, land {m.wall_seconds:.2f} s, "
            f"land again {agains[-1].wall_seconds:.2f} s")
    outcome = {k: printed.get(k) for k in ("status", "rows_landed", "rows_valid", "rows_quarantined", "failed_checks")}
    return {
        "rows": rows, "source_contract": LAND_SOURCE, "repeats": repeats,
        # every child compiles every module it imports when bytecode caching is off: it inflates start-up most
        "python_dont_write_bytecode": bool(os.environ.get("PYTHONDONTWRITEBYTECODE")),
        "help": _summary(helps),
        "land": _summary(lands, fresh_workspace=True, **outcome),
        "land_again": _summary(agains, fresh_workspace=False),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--workspace", type=Path, help="where the extracts and workspaces go (default: a temp folder)")
    parser.add_argument("--rows", type=int, default=LAND_ROWS)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    work = args.workspace or Path(tempfile.mkdtemp(prefix="bench_startup_"))
    result = run_startup(work, rows=args.rows, repeats=args.repeats,
                         say=lambda message: print(message, file=sys.stderr, flush=True))
    args.result.write_text(json.dumps(result, indent=2))
    if args.workspace is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
