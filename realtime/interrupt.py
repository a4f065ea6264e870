"""Ctrl-C, SIGTERM and SIGHUP during a run: they stop it the same way, and never in the middle of
writing a frame to the outputs (so every output stays valid and can be kept)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s)


class CtrlC:
    """SIGINT (and SIGTERM, SIGHUP: ``kill``, a closed terminal) that never lands in the middle
    of writing a frame to the outputs; all three stop a run the same way, keeping valid outputs.

    Outside :meth:`deferred` blocks a signal raises ``KeyboardInterrupt`` at once (a blocked read
    is interrupted); inside, it is raised when the block ends. Only the main thread can own
    signals: elsewhere (the web app's worker threads) this does nothing.
    """

    def __init__(self) -> None:
        self.active = threading.current_thread() is threading.main_thread()
        self.critical = False
        self.pending = False
        self.held = False
        self.previous = {s: signal.getsignal(s) for s in STOP_SIGNALS} if self.active else {}
        if self.active:
            for s in STOP_SIGNALS:
                signal.signal(s, self._handler)

    def _handler(self, signum: int, frame: object) -> None:
        if self.critical or self.held:
            self.pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self.critical = True
        try:
            yield
        finally:
            self.critical = False
        if self.pending and not self.held:
            self.pending = False
            raise KeyboardInterrupt

    def hold(self) -> None:
        self.held = True

    def restore(self) -> None:
        if self.active:
            for s, handler in self.previous.items():
                signal.signal(s, handler)
            self.active = False
