"""What it costs to start: load the project's Definitions (every import plus the asset graph)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    from clinical_mlops.definitions import defs

    loaded = defs()
    seconds = time.perf_counter() - started
    heavy = sorted(m for m in ("sklearn", "mlflow", "evidently", "fairlearn", "matplotlib", "pandera", "scipy")
                   if m in sys.modules)
    args.result.write_text(json.dumps({
        "seconds": round(seconds, 3), "assets": len(list(loaded.assets or [])), "heavy_modules_loaded": heavy,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
