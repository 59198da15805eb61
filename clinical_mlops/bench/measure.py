"""Run a command in a child process and measure its wall time and peak resident memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["BenchStepError", "Measurement", "POLL_SECONDS", "measure", "python_module"]


POLL_SECONDS = 0.02
"""How often the child's memory high-water mark is read; a peak in its last 20 ms can be missed."""


class BenchStepError(RuntimeError):
    """A measured command failed; the message carries the tail of its output."""


@dataclass(frozen=True)
class Measurement:
    """One measured child process."""

    name: str
    wall_seconds: float
    peak_rss_mib: float
    rows: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float | None:
        return self.rows / self.wall_seconds if self.rows and self.wall_seconds > 0 else None

    def as_dict(self) -> dict:
        return {**asdict(self), "rows_per_second": self.rows_per_second}


def python_module(module: str, *args: str) -> list[str]:
    """argv running ``module`` with this interpreter (no ``uv run`` wrapper between us and it)."""
    return [sys.executable, "-m", module, *args]


def measure(
    name: str,
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    rows: int | None = None,
    log: Path | None = None,
    result_file: Path | None = None,
) -> Measurement:
    """Run ``argv`` to completion; wall time from fork to reap, peak RSS of the child's own memory.

    Peak RSS is the kernel's high-water mark (``VmHWM``) of the child, read while it runs:
    ``wait4``'s ``ru_maxrss`` would also count the parent's memory copied at fork.

    ``env`` is the child's whole environment (default: ours). The child's output goes to ``log`` (or is discarded). When ``result_file`` is given, the
    child is expected to write a JSON object there; it becomes ``Measurement.extra``.
    """
    child_env = dict(os.environ if env is None else env)
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        started = time.perf_counter()
        process = subprocess.Popen(argv, env=child_env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        peak_kib = 0
        while True:
            pid, status, _ = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            peak_kib = max(peak_kib, _high_water_kib(process.pid))
            time.sleep(POLL_SECONDS)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log:
            out.close()
    if process.returncode != 0:
        tail = ""
        if log and Path(log).exists():
            tail = "\n".join(Path(log).read_text(errors="replace").splitlines()[-15:])
        raise BenchStepError(f"{name} exited with {process.returncode}\n{tail}")
    extra = json.loads(Path(result_file).read_text()) if result_file and Path(result_file).exists() else {}
    return Measurement(name, round(wall, 3), round(peak_kib / 1024, 1), rows, extra)


def _high_water_kib(pid: int) -> int:
    """``VmHWM`` of a live process in KiB (0 if it is gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0
