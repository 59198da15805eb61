"""What it costs to start: load the project's Definitions (every import plus the asset graph).

Writes ``seconds`` (import and build together), ``import_seconds`` (``import clinical_mlops.definitions``),
``build_seconds`` (the asset graph, jobs, sensors and checks built from the defs folder), the counts of
what was loaded and ``heavy_modules_loaded``: which of the libraries only asset bodies need were
imported anyway (should be none: they are imported when an asset runs). The process's own wall time
(interpreter start included) is what :func:`clinical_mlops.bench.measure.measure` reports around it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["HEAVY_MODULES", "heavy_modules_loaded", "main"]

HEAVY_MODULES = ("sklearn", "mlflow", "evidently", "fairlearn", "matplotlib", "pandera", "scipy")
"""Libraries no module imported to load the Definitions or start the command line may import."""


def heavy_modules_loaded() -> list[str]:
    """Which of :data:`HEAVY_MODULES` this process has imported."""
    return sorted(m for m in HEAVY_MODULES if m in sys.modules)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    from clinical_mlops.definitions import defs

    imported = time.perf_counter()
    loaded = defs()
    repository = loaded.get_repository_def()
    finished = time.perf_counter()
    args.result.write_text(json.dumps({
        "seconds": round(finished - started, 3), "import_seconds": round(imported - started, 3),
        "build_seconds": round(finished - imported, 3), "assets": len(list(loaded.assets or [])),
        "asset_checks": len(repository.asset_graph.asset_check_keys), "jobs": len(repository.get_all_jobs()),
        "sensors": len(repository.sensor_defs), "schedules": len(repository.schedule_defs),
        "heavy_modules_loaded": heavy_modules_loaded(), "pandas_loaded": "pandas" in sys.modules,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
