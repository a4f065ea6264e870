"""Keep native libraries quiet and TensorFlow out of the runtime process.

MediaPipe's Python package imports TensorFlow opportunistically when it is installed (only for
docs/metadata helpers we never use). That costs ~2 s and ~300 MB, so the runtime blocks it while
MediaPipe is imported.

Native LiteRT/MediaPipe/FFmpeg code also prints notes straight to fd 2 (the process's stderr).
Two ways to keep them off the terminal, neither of which can lose a log line:

* :func:`quiet_stderr` points fd 2 at /dev/null around a native call, but only while the calling
  thread is the process's only Python thread (a command line loading its models, reading a file):
  no other thread can be logging into the void meanwhile. Overlapping blocks share one redirection
  (counted), so fd 2 always comes back. With other threads running it does nothing.
* :func:`filter_native_stderr`, for long-running servers with many threads: once, at start-up
  before any thread exists, Python's own stderr moves to a copy of fd 2, and fd 2 becomes a pipe
  whose lines are forwarded unless they are known native noise (:data:`NATIVE_NOISE`). Python's
  log lines never pass through the filter.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.abc
import io
import logging
import os
import re
import select
import sys
import threading
from collections.abc import Iterator

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class _BlockTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname == "tensorflow" or fullname.startswith("tensorflow."):
            raise ModuleNotFoundError(f"{fullname} is blocked in the realtime package", name=fullname)
        return None


@contextlib.contextmanager
def tensorflow_blocked() -> Iterator[None]:
    """Make ``import tensorflow`` fail inside the block (no-op if TensorFlow is already loaded)."""
    if "tensorflow" in sys.modules:
        yield
        return
    finder = _BlockTensorFlow()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


# --- quiet_stderr: fd 2 to /dev/null, only while no other thread runs -----------------------------
_lock = threading.Lock()
_depth = 0  # open quiet_stderr blocks sharing the current redirection
_saved_fd: int | None = None  # fd 2 as it was before the redirection


def _other_threads() -> bool:
    """Whether any Python thread but the caller runs (tqdm's monitor, which only refreshes progress
    bars, does not count)."""
    me = threading.current_thread()
    return any(t is not me and type(t).__name__ != "TMonitor" for t in threading.enumerate())


def _start_quiet() -> bool:
    """Redirect fd 2 (or join the redirection in place); False when it is not safe to."""
    global _depth, _saved_fd
    with _lock:
        if _depth:
            _depth += 1
            return True
        if _filter is not None or _other_threads():
            return False  # another thread may be logging: never send its lines into the void
        try:
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass
        try:
            saved = os.dup(2)
        except OSError:
            return False
        # The saved descriptor is recorded before fd 2 moves: an interrupt anywhere from here on
        # leaves enough for restore_stderr() (run at exit and on every interrupted path) to undo it.
        _saved_fd, _depth = saved, 1
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, 2)
            finally:
                os.close(devnull)
        except OSError:
            _saved_fd, _depth = None, 0
            os.close(saved)
            return False
        return True


def _end_quiet() -> None:
    global _depth
    with _lock:
        _depth -= 1
        if _depth <= 0:
            restore_stderr()


def restore_stderr() -> None:
    """Put fd 2 back, whatever a quiet block was doing when an interrupt (Ctrl-C, SIGTERM) left it
    half-way: called when a block ends, at exit, and on the CLI's interrupted paths. Idempotent."""
    global _depth, _saved_fd
    saved = _saved_fd
    if saved is None:
        _depth = 0
        return
    # fd 2 first, the record after: interrupted in between, the next call simply does it again.
    with contextlib.suppress(OSError):
        os.dup2(saved, 2)
    _saved_fd, _depth = None, 0
    with contextlib.suppress(OSError):
        os.close(saved)


atexit.register(restore_stderr)


def _after_fork_in_child() -> None:
    """A child forked inside a quiet block gets its stderr back and a fresh lock."""
    global _lock, _depth, _saved_fd
    _lock = threading.Lock()
    if _saved_fd is not None:
        with contextlib.suppress(OSError):
            os.dup2(_saved_fd, 2)
            os.close(_saved_fd)
    _depth, _saved_fd = 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence native writes to fd 2 inside the block, when that cannot hide anyone's log lines.

    Only when the calling thread is the only Python thread (or joins a block already open); with
    debug logging on, or other threads running, or :func:`filter_native_stderr` installed, it does
    nothing. Python logging is flushed first and works as before afterwards.
    """
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    started = False
    try:
        started = _start_quiet()
        yield
    finally:
        if started:
            _end_quiet()


def stderr_is_quiet() -> bool:
    """Whether fd 2 is redirected by :func:`quiet_stderr` right now (for tests and diagnostics)."""
    return _depth > 0


# --- filter_native_stderr: fd 2 through a line filter, Python's stderr beside it ---------------------
# Lines native libraries print on their own that say nothing the program does not say better:
NATIVE_NOISE = re.compile(
    rb"(INFO: (Created|Initialized|Replacing) TensorFlow Lite"  # LiteRT/TFLite start-up notes
    rb"|OpenCV: FFMPEG: "  # OpenCV's FFmpeg backend, e.g. "tag 'VP80' is not supported ... webm"
    rb"|\[[^\]\n]{1,80} @ 0x[0-9a-fA-F]+\] "  # FFmpeg's av_log: "[mov,mp4,... @ 0x55d1] moov atom not found"
    rb"|\[ ?(WARN|INFO|DEBUG|ERROR) ?:\d+@"  # OpenCV's own log ("[ WARN:0@1.2] global ...")
    rb"|[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ "  # glog (MediaPipe, LiteRT)
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|\s*Last message repeated \d+ times"  # FFmpeg's own summary of repeated av_log lines
    rb"|Corrupt JPEG data|Premature end of JPEG file|Invalid SOS parameters|libpng (warning|error))")


class _StderrFilter:
    """fd 2 -> pipe -> this thread -> the real stderr, minus :data:`NATIVE_NOISE` lines."""

    FLUSH_PARTIAL_S = 0.5  # a line without its newline is forwarded after this long

    def __init__(self, drop_all: bool = False) -> None:
        sys.stderr.flush()
        self.drop_all = drop_all
        self.real_fd = os.dup(2)
        read_fd, write_fd = os.pipe()
        self.read_fd = read_fd
        self.dropped = 0
        # Python's side first: its stream and log handlers write to the real stderr, not the pipe.
        self.old_stderr = sys.stderr
        self.stream = io.TextIOWrapper(io.FileIO(self.real_fd, "w", closefd=False), encoding="utf-8",
                                       errors="backslashreplace", line_buffering=True, write_through=True)
        sys.stderr = self.stream
        self.moved_handlers = _move_stream_handlers(self.old_stderr, self.stream)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self.thread = threading.Thread(target=self._pump, name="native-stderr-filter", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        tail = b""
        while True:
            if tail and not select.select([self.read_fd], [], [], self.FLUSH_PARTIAL_S)[0]:
                self._forward(tail)
                tail = b""
                continue
            try:
                chunk = os.read(self.read_fd, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            *lines, tail = (tail + chunk).split(b"\n")
            for line in lines:
                self._forward(line + b"\n")
        if tail:
            self._forward(tail)
        os.close(self.read_fd)

    def _forward(self, line: bytes) -> None:
        if self.drop_all or NATIVE_NOISE.match(line.lstrip(b"\r")):
            self.dropped += 1
            return
        view = memoryview(line)
        while view:
            try:
                view = view[os.write(self.real_fd, view):]
            except OSError:
                return

    def close(self) -> None:
        """fd 2 back to the real stderr; forwards what is still in the pipe."""
        os.dup2(self.real_fd, 2)  # closes the pipe's write end: the pump reads to the end and stops
        self.thread.join(timeout=2.0)
        _move_stream_handlers(self.stream, self.old_stderr)
        if sys.stderr is self.stream:
            sys.stderr = self.old_stderr
        self.stream.flush()


def _move_stream_handlers(old: object, new: io.TextIOBase) -> int:
    """Point every logging StreamHandler that writes to ``old`` at ``new``; returns how many."""
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    moved = 0
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is old:
                handler.setStream(new)
                moved += 1
    return moved


_filter: _StderrFilter | None = None


def filter_native_stderr(drop_all: bool = False) -> bool:
    """Install the fd-2 line filter for the rest of the process (see the module's docstring).

    ``drop_all``: drop every native line, not only known noise (a batch worker, whose failures
    reach the user as one line from its driver; with debug logging nothing is filtered).

    Call it once, from the main thread, before starting threads (a web server's ``main``). Returns
    False, changing nothing, when stderr is not the process's fd 2 (tests capturing it, pythonw),
    when debug logging is on, or when it is installed already.
    """
    global _filter
    with _lock:
        if _filter is not None or _depth:
            return False
        try:
            if sys.stderr is None or sys.stderr.fileno() != 2:
                return False
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            return False
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            return False
        try:
            _filter = _StderrFilter(drop_all)
        except OSError:
            return False
        return True


def unfilter_native_stderr() -> None:
    """Undo :func:`filter_native_stderr` (at shutdown, and in tests)."""
    global _filter
    with _lock:
        current, _filter = _filter, None
    if current is not None:
        current.close()
