"""The model in service: the champion refreshed in the background, and micro-batched scoring."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace

import pandas as pd

from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.scoring import champion as scoring

__all__ = ["ChampionHolder", "MicroBatcher", "NoModelAvailable"]

logger = logging.getLogger("clinical_mlops.scoring.service")


class ChampionHolder:
    """Holds the model in service; ``refresh`` loads a newly promoted champion and swaps it in."""

    def __init__(self, spec: CohortSpec) -> None:
        self.spec = spec
        self._current: scoring.ScoringModel | None = None
        self._lock = threading.Lock()  # one refresh at a time; readers never take it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.swaps = 0

    @property
    def current(self) -> scoring.ScoringModel | None:
        return self._current

    def refresh(self) -> bool:
        """Resolve the alias; load and swap if it points elsewhere. True when the model changed."""
        with self._lock:
            try:
                ref = scoring.resolve_champion(self.spec.name)
            except Exception as exc:  # noqa: BLE001 - keep serving the current model
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                return False
            current = self._current
            if current is not None and (current.ref.name, current.ref.version) == (ref.name, ref.version):
                if current.ref != ref:  # same version, new card hash or source: no reload needed
                    self._current = replace(current, ref=ref)
                self.last_error = None
                return False
            try:
                loaded = scoring.load_scoring_model(ref, self.spec)
            except Exception as exc:  # noqa: BLE001
                self.last_error = f"could not load {ref.name} v{ref.version}: {exc.__class__.__name__}: {exc}"
                logger.error(self.last_error)
                return False
            self._current = loaded  # one reference assignment: atomic for readers
            self.swaps += 1
            self.last_error = None
            logger.info("serving %s v%s (%s)", ref.name, ref.version, ref.note or ref.source)
            return True

    def start(self, interval: float) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                self.refresh()

        self._thread = threading.Thread(target=loop, name="champion-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class NoModelAvailable(RuntimeError):
    """No champion could be loaded yet."""


@dataclass
class _ScoreJob:
    features: dict
    done: threading.Event = field(default_factory=threading.Event)
    risk: float | None = None
    model: scoring.ScoringModel | None = None
    error: BaseException | None = None


class MicroBatcher:
    """Scores the rows of all requests waiting at that moment in one ``predict_proba`` call.

    With one request in flight this is a plain call (no waiting for company); under load, the
    per-call overhead of the scikit-learn pipeline (column transformer, pandas) is paid once per
    batch instead of once per request. Each row reports the model that scored it, so a swap
    mid-stream is recorded exactly.
    """

    def __init__(self, holder: ChampionHolder, *, max_batch: int = 256) -> None:
        self.holder = holder
        self.max_batch = max_batch
        self._pending: list[_ScoreJob] = []
        self._cv = threading.Condition()
        self._stopped = False
        self.batches = 0
        self.rows = 0
        self._thread = threading.Thread(target=self._run, name="scoring-batcher", daemon=True)
        self._thread.start()

    def score(self, features: dict) -> tuple[float, scoring.ScoringModel]:
        job = _ScoreJob(features)
        with self._cv:
            if self._stopped:
                raise NoModelAvailable("the service is shutting down")
            self._pending.append(job)
            self._cv.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.model is not None and job.risk is not None
        return job.risk, job.model

    def _run(self) -> None:
        from threadpoolctl import threadpool_limits

        # Small batches gain nothing from OpenMP threads, which would compete with the event
        # loop and the log writer; the limit applies to this (the scoring) thread.
        threadpool_limits(limits=1)
        while True:
            with self._cv:
                while not self._pending and not self._stopped:
                    self._cv.wait()
                if self._stopped and not self._pending:
                    return
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            model = self.holder.current
            try:
                if model is None:
                    raise NoModelAvailable(self.holder.last_error or "no champion model is available yet")
                risks = model.score(pd.DataFrame([job.features for job in batch]))
                for job, risk in zip(batch, risks):
                    job.risk, job.model = float(risk), model
            except BaseException as exc:  # noqa: BLE001 - every waiting request must get an answer
                for job in batch:
                    job.error = exc
            self.batches += 1
            self.rows += len(batch)
            for job in batch:
                job.done.set()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify_all()
        self._thread.join(timeout=5)
