"""The model in service: the champion refreshed in the background, and micro-batched scoring."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.scoring import champion as scoring
from clinical_mlops.scoring.service._compiled import compile_pipeline

__all__ = ["ChampionHolder", "MicroBatcher", "NoModelAvailable"]

logger = logging.getLogger("clinical_mlops.scoring.service")

CONFIRM_SECONDS = 0.25
"""How long the holder waits to confirm that a champion in service has really been withdrawn."""


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
        """Resolve the alias; load and swap if it points elsewhere, withdraw the model if there is no champion
        any more. True when the model in service changed."""
        with self._lock:
            try:
                ref = self._resolve()
            except scoring.NoModelError as exc:  # no champion (withdrawn, or two): serve nothing
                changed = self._current is not None
                if changed:
                    logger.error("withdrawing %s v%s: %s", self._current.ref.name, self._current.ref.version, exc)
                self._current = None
                self.last_error = str(exc)
                return changed
            except Exception as exc:  # noqa: BLE001 - the registry is unreachable: keep serving the current model
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
                loaded = replace(loaded, compiled=compile_pipeline(loaded.pipeline, self.spec))
            except Exception as exc:  # noqa: BLE001
                self.last_error = f"could not load {ref.name} v{ref.version}: {exc.__class__.__name__}: {exc}"
                logger.error(self.last_error)
                return False
            self._current = loaded  # one reference assignment: atomic for readers
            self.swaps += 1
            self.last_error = None
            logger.info("serving %s v%s (%s)", ref.name, ref.version, ref.note or ref.source)
            return True

    def _resolve(self) -> scoring.ModelRef:
        """The champion; while a model is in service, "no champion" must be seen twice, a moment apart, before
        it is withdrawn (an alias moving between the candidate and mitigated names is not a withdrawal)."""
        try:
            return scoring.resolve_champion(self.spec.name)
        except scoring.NoModelError:
            if self._current is None:
                raise
        self._stop.wait(CONFIRM_SECONDS)
        return scoring.resolve_champion(self.spec.name)

    @property
    def unavailable_reason(self) -> str | None:
        """Why no model is in service (the same line batch scoring fails with), or None when one is."""
        if self._current is not None:
            return None
        return self.last_error or scoring.no_champion_reason(self.spec.name)

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
    """No champion is in service (none promoted, withdrawn, or not loadable): the request gets a 503."""


@dataclass
class _ScoreJob:
    features: dict
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """Scores the rows of all requests waiting at that moment in one call of the model.

    With one request in flight this is a plain call (no waiting for company); under load, the
    per-call overhead (numpy calls of the compiled scorer; pandas and column transformers of the
    pipeline when the model could not be compiled) is paid once per batch instead of once per
    request. Each row reports the model that scored it, so a swap mid-stream is recorded exactly.
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
        return self.submit(features).result()

    def submit(self, features: dict) -> Future:
        """Queue one row; the future's result is ``(risk, model that scored it)`` (or ``NoModelAvailable``)."""
        job = _ScoreJob(features)
        job.future.set_running_or_notify_cancel()
        with self._cv:
            if self._stopped:
                job.future.set_exception(NoModelAvailable("the service is shutting down"))
                return job.future
            self._pending.append(job)
            self._cv.notify()
        return job.future

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
                    raise NoModelAvailable(self.holder.unavailable_reason or "no champion model is available")
                risks = [float(r) for r in model.score_records([job.features for job in batch])]
            except BaseException as exc:  # noqa: BLE001 - every waiting request must get an answer
                for job in batch:
                    job.future.set_exception(exc)
            else:
                for job, risk in zip(batch, risks):
                    job.future.set_result((risk, model))
            self.batches += 1
            self.rows += len(batch)

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify_all()
        self._thread.join(timeout=5)
