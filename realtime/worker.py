"""Background classification so the display never waits for a slow classifier (Pi, big models).

The main loop submits crops of the tracks that need a result and polls for finished ones; while
the worker is busy it simply does not submit (the next frame tries again), so the queue never
grows and results are never older than one classification.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    track_ids: tuple[int, ...]
    crops: np.ndarray
    frame_time_s: float


@dataclass(frozen=True)
class Result:
    """A track's classification: every named output of the model (``p_female`` included)."""

    track_id: int
    values: Mapping[str, float]
    frame_time_s: float
    latency_s: float


Predict = Callable[[np.ndarray], Mapping[str, np.ndarray]]


class ClassifierWorker:
    """One daemon thread running ``predict(crops)`` on the latest job: ``p_female`` per crop, or
    the model's named outputs (``{"p_female": ..., "apparent_age": ...}``)."""

    def __init__(self, predict: Predict, name: str = "classifier") -> None:
        self._predict = predict
        self._jobs: queue.Queue[tuple[Job, float] | None] = queue.Queue(maxsize=1)
        self._results: queue.Queue[Result] = queue.Queue()
        self._busy = threading.Event()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.completed = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """A submitted job has not finished yet (set by :meth:`submit`, cleared by the thread)."""
        return self._busy.is_set()

    def submit(self, track_ids: Sequence[int], crops: np.ndarray, frame_time_s: float) -> bool:
        """Queue a job unless one is already waiting or running; True when accepted."""
        if self._stop.is_set() or self.error is not None or self.busy or not len(track_ids):
            return False
        # Marked busy here, not when the thread picks the job up: otherwise a second job could
        # slip in between the thread's get() and its set() and wait behind the first.
        self._busy.set()
        try:
            self._jobs.put_nowait((Job(tuple(track_ids), crops, frame_time_s), time.monotonic()))
        except queue.Full:
            return False
        return True

    def poll(self) -> list[Result]:
        """All results finished since the last poll (never blocks)."""
        if self.error is not None:
            raise self.error
        out = []
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                return out

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._jobs.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None or self._stop.is_set():
                break
            job, submitted = item
            try:
                out = self._predict(job.crops)
            except Exception as exc:
                self.error = exc
                self._busy.clear()
                break
            latency = time.monotonic() - submitted
            for k, tid in enumerate(job.track_ids):
                values = {name: float(v[k]) for name, v in out.items()}
                self._results.put(Result(tid, values, job.frame_time_s, latency))
            self.completed += 1
            self._busy.clear()

    def close(self, timeout_s: float = 2.0) -> bool:
        """Stop the thread; True if it ended within ``timeout_s`` (it is a daemon either way)."""
        self._stop.set()
        try:
            self._jobs.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout_s)
        alive = self._thread.is_alive()
        if alive:
            log.debug("classifier thread still busy after %.1f s; leaving it to exit with the process", timeout_s)
        return not alive
