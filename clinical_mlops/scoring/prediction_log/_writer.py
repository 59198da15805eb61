"""Writing the log: one new segment per process, group commit, an entry returned only once fsync'ed."""

from __future__ import annotations

import os
import secrets
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from clinical_mlops.scoring.prediction_log._entries import (
    GENESIS_HASH,
    KIND_CLOSE,
    KIND_OPEN,
    SEGMENT_SUFFIX,
    LogEntry,
    cohort_directory,
    last_complete_entry,
    list_segments,
    seal,
)

__all__ = ["PredictionLogClosed", "PredictionLogWriter"]


class PredictionLogClosed(RuntimeError):
    """The writer is closed or failed: nothing more can be logged (so nothing may be served)."""


@dataclass
class _Pending:
    kind: str
    record: dict
    future: Future = field(default_factory=Future)


class PredictionLogWriter:
    """Appends entries to a new segment, durably, from any number of threads (group commit)."""

    def __init__(self, root: Path, cohort: str, *, fsync: bool = True, meta: dict | None = None) -> None:
        self.directory = cohort_directory(root, cohort)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cohort = cohort
        self.fsync = fsync
        previous = list_segments(self.directory)
        started = datetime.now(UTC)
        name = f"{started.strftime('%Y%m%dT%H%M%S_%f')}Z__{os.getpid()}__{secrets.token_hex(3)}{SEGMENT_SUFFIX}"
        self.path = self.directory / name
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
        if fsync:
            _fsync_directory(self.directory)
        self._seq = 0
        self._prev = GENESIS_HASH
        self._pending: list[_Pending] = []
        self._cv = threading.Condition()
        self._closing = False
        self._failed: BaseException | None = None
        self.entries_written = 0
        self.fsyncs = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()
        link: dict = {"previous_segment": None, "previous_head_seq": None, "previous_head_hash": None}
        if previous:
            head = last_complete_entry(previous[-1])
            link = {
                "previous_segment": previous[-1].name,
                "previous_head_seq": head.get("seq") if head else None,
                "previous_head_hash": head.get("hash") if head else None,
            }
        self.append(KIND_OPEN, {"segment": name, "cohort": cohort, "pid": os.getpid(), **link, **(meta or {})})

    @property
    def segment(self) -> str:
        return self.path.name

    def append(self, kind: str, record: dict) -> LogEntry:
        """Seal ``record`` into the chain and return once it is on disk (fsync'ed)."""
        return self.submit(kind, record).result()

    def submit(self, kind: str, record: dict) -> Future:
        """Queue ``record``; the future's result is its entry, set only once it is on disk (fsync'ed).

        Its exception is :class:`PredictionLogClosed` when the log is closed or failed. Callers
        that must not block (the service's event loop) await it instead of calling ``append``.
        """
        pending = _Pending(kind, record)
        pending.future.set_running_or_notify_cancel()  # not cancellable: once queued, it is logged
        with self._cv:
            if self._failed is not None:
                failure = PredictionLogClosed(f"the prediction log failed: {self._failed}")
                failure.__cause__ = self._failed
                pending.future.set_exception(failure)
                return pending.future
            if self._closing and kind != KIND_CLOSE:
                pending.future.set_exception(PredictionLogClosed("the prediction log is closed"))
                return pending.future
            self._pending.append(pending)
            self._cv.notify()
        return pending.future

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not (self._closing and not self._pending):
                    self._cv.wait()
                if not self._pending and self._closing:
                    return
                batch, self._pending = self._pending, []
            try:
                entries = []
                seq, prev = self._seq, self._prev
                for item in batch:
                    seq += 1
                    entry = seal(seq, item.kind, item.record, prev)
                    prev = entry.hash
                    entries.append(entry)
                data = b"".join(e.line() for e in entries)
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                if self.fsync:
                    os.fsync(self._fd)
                    self.fsyncs += 1
                self._seq, self._prev = seq, prev
                self.entries_written += len(entries)
            except BaseException as exc:  # noqa: BLE001 - every waiting caller must learn of it
                with self._cv:
                    self._failed = exc
                    failed, self._pending = batch + self._pending, []
                for item in failed:
                    failure = PredictionLogClosed(f"the prediction log failed: {exc}")
                    failure.__cause__ = exc
                    item.future.set_exception(failure)
                return
            for item, entry in zip(batch, entries):  # only now, on disk: acknowledge
                item.future.set_result(entry)

    def close(self) -> None:
        """Append ``segment_close`` and stop; later appends raise ``PredictionLogClosed``.

        Closing and enqueuing the close entry happen under one lock, so no entry can follow it.
        """
        closing = _Pending(KIND_CLOSE, {"segment": self.segment})
        with self._cv:
            if self._closing:
                return
            self._closing = True
            if self._failed is None:
                self._pending.append(closing)
                self._cv.notify_all()
            else:
                closing.future.set_result(None)
        try:
            closing.future.result(timeout=30)
        except Exception:  # noqa: BLE001 - a failed log is closed all the same
            pass
        self._thread.join(timeout=10)
        os.close(self._fd)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
