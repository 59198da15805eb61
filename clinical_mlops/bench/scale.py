"""Each data stage at a given number of synthetic encounters, one stage per process.

Stages run in order on one workspace (``--workspace``): generate the extracts, land,
validate, features, split, train, then drift statistics, fairness aggregates, evaluation and
batch scoring. Each call reads what the previous stages left in the workspace's warehouse.
Run as ``python -m clinical_mlops.bench.scale STAGE --rows N --workspace DIR --result out.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Stage:
    name: str
    target: str
    """``module:function`` taking ``(workspace: Path, rows: int)`` and returning a JSON-able dict."""


STAGES: tuple[Stage, ...] = ()


def run_stage(name: str, workspace: Path, rows: int) -> dict:
    stage = next((s for s in STAGES if s.name == name), None)
    if stage is None:
        raise SystemExit(f"unknown stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")
    module, function = stage.target.split(":")
    return getattr(importlib.import_module(module), function)(workspace, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("stage")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    from clinical_mlops.settings import switch_off_telemetry

    switch_off_telemetry()
    args.result.write_text(json.dumps(run_stage(args.stage, args.workspace, args.rows), default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
