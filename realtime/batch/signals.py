"""Stopping a batch: Ctrl-C, SIGTERM and SIGHUP, in the driver (:data:`STOP`) and while helper
processes start (:func:`helpers_immune_to_sighup`)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class _StopSignals:
    """SIGINT, SIGTERM and SIGHUP stop the batch the same way (Ctrl-C, ``kill``, a closed terminal):
    the first one raises ``KeyboardInterrupt`` in the driver's main thread, whose handlers stop and
    reap the workers, shut down the Ray runtime the batch started and remove partial outputs.
    Later ones never interrupt that cleanup (it is bounded); they only hurry it. Inside
    :meth:`deferred` blocks the first signal is raised when the block ends."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the first stop signal received
        self.count = 0
        self.critical = 0
        self.pending = False

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                signal.signal(s, self._handler)

    def _handler(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.signum is not None:
            return  # already stopping
        self.signum = signum
        if self.critical:
            self.pending = True
            return
        raise KeyboardInterrupt

    @property
    def hurry(self) -> bool:
        return self.count > 1

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self.critical += 1
        try:
            yield
        finally:
            self.critical -= 1
        if self.pending and not self.critical:
            self.pending = False
            raise KeyboardInterrupt

    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "SIGINT"


STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s)
STOP = _StopSignals()


@contextlib.contextmanager
def helpers_immune_to_sighup() -> Iterator[None]:
    """Processes started inside the block (multiprocessing's resource tracker, Ray's) never see
    SIGHUP: they inherit it blocked. A closed terminal sends SIGHUP to the whole process group, and
    they would die at once, before the driver stops them in order (the tracker ignores SIGINT and
    SIGTERM itself; Ray blocks SIGINT in its processes and handles SIGTERM). A SIGHUP for the
    driver meanwhile waits for the end of the block."""
    hup = getattr(signal, "SIGHUP", None)
    if hup is None or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {hup})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)

