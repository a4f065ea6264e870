"""The local pool: N spawned worker processes (:class:`LocalPool`), one video at a time each."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..cli import setup_logging
from .signals import STOP, STOP_SIGNALS, helpers_immune_to_sighup
from .task import VideoResult, VideoTask, process_video

log = logging.getLogger("realtime.batch")


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)



_worker_stop = False


def _worker_signal(signum: int, frame: object) -> None:
    global _worker_stop
    _worker_stop = True


def _worker_main(wid: int, inbox: Any, outbox: Any, verbose: bool) -> None:
    """A local worker process: videos from ``inbox`` until None. SIGINT, SIGTERM and SIGHUP (Ctrl-C
    reaches every process of the group; ``kill`` may too) are noted between videos and stop the
    worker before its next one; while a video runs, the pipeline's own handler stops it cleanly.
    A worker whose driver is gone (killed) stops too, within a second. Its failures reach the user
    through the driver, so it logs errors only, and native libraries' lines (FFmpeg on damaged
    files) are dropped (all shown with --verbose)."""
    for s in STOP_SIGNALS:
        signal.signal(s, _worker_signal)
    setup_logging(verbose)
    if not verbose:
        logging.getLogger().setLevel(logging.ERROR)
        from ..native import filter_native_stderr

        # Before any thread (the queues' feeders): LiteRT's "Created TensorFlow Lite XNNPACK delegate"
        # and FFmpeg's notes stay off the terminal even once the worker has threads (-v keeps them).
        filter_native_stderr(drop_all=True)
    parent = mp.parent_process()
    checked = [time.monotonic()]

    def should_stop() -> bool:
        if _worker_stop:
            return True
        now = time.monotonic()
        if now - checked[0] >= 0.5:
            checked[0] = now
            return parent is not None and not parent.is_alive()
        return False

    while not _worker_stop:
        try:
            task = inbox.get(timeout=0.5)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return
            continue
        if task is None:
            return
        result = process_video(task, lambda n: outbox.put(("frames", wid, n)), should_stop)
        outbox.put(("done", wid, result))
        if result.status == "interrupted":
            return


@dataclass
class _Worker:
    process: Any
    inbox: Any
    task: VideoTask | None = None


class LocalPool:
    """N worker processes; each gets one video at a time, so a crashed worker (a native library
    dying on a damaged file) fails exactly the video it held and is replaced. Every worker it
    starts is reaped by :meth:`close` (or :meth:`interrupt`), on every exit path."""

    def __init__(self, workers: int) -> None:
        self.verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
        self.ctx = mp.get_context("spawn")  # no fork of a process that may hold threads
        from multiprocessing import resource_tracker

        with helpers_immune_to_sighup():
            resource_tracker.ensure_running()  # (the queues' semaphores would start it)
        self.outbox = self.ctx.Queue()
        self.size = workers
        self.workers: dict[int, _Worker] = {}
        self._next = 0

    def _spawn(self) -> int:
        wid = self._next
        self._next += 1
        inbox = self.ctx.Queue()
        proc = self.ctx.Process(target=_worker_main, args=(wid, inbox, self.outbox, self.verbose), daemon=True,
                                name=f"batch-worker-{wid}")
        with STOP.deferred():  # a signal now would leave a started process out of self.workers
            proc.start()
            self.workers[wid] = _Worker(proc, inbox)
        return wid

    def run(self, tasks: list[VideoTask], on_frames: Callable[[int, int], None],
            on_result: Callable[[VideoResult], None]) -> None:
        todo = deque(tasks)
        for _ in range(min(self.size, len(todo))):
            self._spawn()
        for wid in list(self.workers):
            self._assign(wid, todo)
        while any(w.task is not None for w in self.workers.values()):
            try:
                kind, wid, payload = self.outbox.get(timeout=0.5)
            except queue.Empty:
                self._check_crashes(todo, on_result)
                continue
            if kind == "frames":
                task = self.workers[wid].task if wid in self.workers else None
                if task is not None:
                    on_frames(task.index, payload)
            elif kind == "done" and wid in self.workers:  # (a worker found dead was already reported)
                self.workers[wid].task = None
                on_result(payload)
                self._assign(wid, todo)

    def _assign(self, wid: int, todo: deque[VideoTask]) -> None:
        worker = self.workers[wid]
        if todo:
            worker.task = todo.popleft()
            worker.inbox.put(worker.task)
        else:
            worker.inbox.put(None)

    def _check_crashes(self, todo: deque[VideoTask], on_result: Callable[[VideoResult], None]) -> None:
        for wid, worker in list(self.workers.items()):
            if worker.task is not None and not worker.process.is_alive():
                task = worker.task
                code = worker.process.exitcode
                log.debug("worker %d died (exit code %s) on %s", wid, code, task.rel)
                worker.process.join(timeout=1)
                del self.workers[wid]
                on_result(VideoResult(task.index, task.rel, "failed",
                                      error=f"worker process died (exit code {code}) while annotating it"))
                if todo:
                    self._assign(self._spawn(), todo)

    def _drain(self, on_done: Callable[[VideoResult], None] | None, timeout: float) -> None:
        """Read what the workers sent (a worker cannot exit before its last message is read);
        videos that finished all the same are handed to ``on_done``, the rest is dropped."""
        try:
            kind, _, payload = self.outbox.get(timeout=timeout)
        except (queue.Empty, OSError, EOFError, ValueError):
            return
        if kind == "done" and payload.status == "ok" and on_done is not None:
            try:
                on_done(payload)
            except Exception as exc:  # the batch is stopping anyway: never hide the interruption
                log.debug("could not keep %s: %s", payload.rel, exc)

    def interrupt(self, on_done: Callable[[VideoResult], None] | None = None,
                  hurry: Callable[[], bool] = lambda: False, grace_s: float = 20.0) -> None:
        """Stop every worker: SIGINT (the running video stops cleanly, its temporary files are
        removed), then, after ``grace_s`` or as soon as ``hurry()``, :meth:`close`."""
        for worker in self.workers.values():
            if worker.process.is_alive() and worker.process.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGINT)
                with contextlib.suppress(Exception):
                    worker.inbox.put(None)  # and no next video
        deadline = time.monotonic() + grace_s
        while (any(w.process.is_alive() for w in self.workers.values()) and time.monotonic() < deadline
               and not hurry()):
            self._drain(on_done, 0.1)
        self.close(on_done)

    def close(self, on_done: Callable[[VideoResult], None] | None = None) -> None:
        """Tell idle workers to stop, then terminate (SIGTERM: a running video stops cleanly) and
        finally kill the ones still there; every worker is reaped."""
        for worker in self.workers.values():
            if worker.process.is_alive():
                with contextlib.suppress(Exception):
                    worker.inbox.put(None)
        for step, wait_s in (("ask", 5.0), ("terminate", 5.0), ("kill", 5.0)):
            alive = [w for w in self.workers.values() if w.process.is_alive()]
            if not alive:
                break
            for worker in alive:
                with contextlib.suppress(Exception):
                    if step == "terminate":
                        worker.process.terminate()
                    elif step == "kill":
                        worker.process.kill()
            deadline = time.monotonic() + wait_s
            while any(w.process.is_alive() for w in alive) and time.monotonic() < deadline:
                self._drain(on_done, 0.05)
        for worker in self.workers.values():
            worker.process.join(timeout=1)
            worker.inbox.cancel_join_thread()
            with contextlib.suppress(Exception):
                worker.inbox.close()
        self.outbox.cancel_join_thread()
        self.workers.clear()

