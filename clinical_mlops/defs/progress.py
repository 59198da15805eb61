"""A Dagster logger that prints one line per step, for the command line's progress display."""

import logging
import sys
import time

import dagster as dg

__all__ = ["defs", "progress_logger"]


class _StepProgressHandler(logging.Handler):
    """Prints step start, success and failure events, and check outcomes; nothing else."""

    def __init__(self) -> None:
        super().__init__()
        self._started: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "dagster_meta", {}).get("dagster_event")
        if event is None:
            return
        kind, step = event.event_type_value, event.step_key or ""
        if kind == "STEP_START":
            self._started[step] = time.perf_counter()
            print(f"  ▸ {step} …", file=sys.stderr, flush=True)
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            elapsed = time.perf_counter() - self._started.get(step, time.perf_counter())
            mark = "✓" if kind == "STEP_SUCCESS" else "✗"
            print(f"  {mark} {step} ({elapsed:.1f}s)", file=sys.stderr, flush=True)
        elif kind == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            if not data.passed:
                print(f"    ! check {data.check_name} failed on {data.asset_key.to_user_string()}",
                      file=sys.stderr, flush=True)


@dg.logger(description="One line per step on stderr (used by `clinical-mlops demo` and `land`).")
def progress_logger(_init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("clinical_mlops.progress", level=logging.DEBUG)
    logger.addHandler(_StepProgressHandler())
    return logger


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(loggers={"console": dg.colored_console_logger, "progress": progress_logger})
