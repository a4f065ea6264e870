"""Annotate many videos: on every core of this machine, or on a Ray cluster.

Examples:
  face-gender-batch --input recordings/ --output annotated/            one worker per core
  face-gender-batch --input "cams/**/*.mp4" --output out/ --no-video  JSONL + summaries only
  face-gender-batch --input list.txt --output out/ --ray local         same task on Ray
  face-gender-batch --input /nfs/videos --output /nfs/out --ray auto   join a running cluster
  face-gender-batch --input recordings/ --output annotated/ --resume    skip finished videos

Each video gets OUTPUT/<relative path without extension>/ with annotated.mp4 (unless --no-video),
faces.jsonl (the JSONL of face-gender), summary.json (per-track summary, see
realtime/summary.py) and thumbnail.jpg (its first annotated frame); OUTPUT/summary.csv,
OUTPUT/summary.json and OUTPUT/report.html (+ report_files/) cover all videos.

Exit status: 0 when every video was annotated, 3 when the batch finished but some videos failed
(each listed with its error in summary.csv/json and the report), 2 on unusable input (one
`error:` line on stderr), 130 when stopped by Ctrl-C, SIGTERM or SIGHUP (one `error:` line; the
workers are stopped and reaped, partial outputs removed: docs/batch.md, "Signals and --resume").
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import glob
import io
import json
import logging
import math
import multiprocessing as mp
import os
import queue
import re
import signal
import socket
import stat
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from .cli import Parser, add_version, path_arg, positive_int, prog_name, report_user_error, setup_logging
from .config import add_pipeline_args, pipeline_kwargs
from .errors import UserError
from .paths import GENDER_MODEL
from .summary import LABELS, dumps

log = logging.getLogger("realtime.batch")

EXIT_SOME_FAILED = 3
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
VIDEO_NAME, JSONL_NAME, SUMMARY_NAME, THUMB_NAME = "annotated.mp4", "faces.jsonl", "summary.json", "thumbnail.jpg"
RESERVED = frozenset({"summary.csv", "summary.json", "report.html", "report_files"})
THUMB_WIDTH = 480
REQUIREMENTS_BATCH = "requirements-batch.txt"


# --- stopping: Ctrl-C, SIGTERM, SIGHUP --------------------------------------------------------------
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
def _helpers_immune_to_sighup() -> Iterator[None]:
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


# --- inputs --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoInput:
    path: Path  # absolute
    rel: str  # relative to the input's base, POSIX form: how the video is named in every output
    folder: str  # OUTPUT/<folder>/ holds its outputs


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


def collect_inputs(spec: str, output: Path) -> list[VideoInput]:
    """Videos named by a folder (recursive), a glob pattern or a list file (one path per line).

    Each video is named (``rel``, and its output folder) by the path it was found at, links
    included; it is read at its real path. Two names of one file (a link beside its target, a
    hard link) are annotated once, with a ``warning:`` line."""
    if not spec.strip():
        raise UserError("--input is empty: give a folder, a glob pattern, a list file or a video "
                        "(use . for the current folder)")
    path = Path(spec).expanduser()
    if path.is_dir():
        base = path
        if _inside(output, path):
            raise UserError(f"output folder {output} is inside the input folder {path}; "
                            "choose one outside it (its videos would become inputs of the next run)")
        files = sorted(p for p in path.rglob("*") if _is_video(p)
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise UserError(f"no videos ({', '.join(sorted(VIDEO_EXTENSIONS))}) in {path}")
    elif path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
        base, files = path.parent, [path]
    elif path.is_file():
        files = _read_list(path)
        base = Path(os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files]))
    elif glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True) if _is_regular(Path(p)))
        if not files:
            raise UserError(f"no files match {spec}")
        head = []
        for part in Path(os.path.expanduser(spec)).parts:
            if glob.has_magic(part):
                break
            head.append(part)
        base = Path(*head) if head else Path(".")
        if "**" in spec and _inside(output, base):
            raise UserError(f"output folder {output} is inside the folder {base} that {spec} searches; "
                            "choose one outside it")
    else:
        raise UserError(f"input {spec} does not exist (give a folder, a glob pattern or a list file)")
    base_abs = os.path.abspath(base)
    named = [(Path(os.path.abspath(f)), f.resolve()) for f in files]  # (as found, real file)
    inside = [real for _, real in named if _inside(real, output)]
    if inside:
        raise UserError(f"input {inside[0]} is inside the output folder {output}; choose another output folder")
    unique = _one_name_per_file(named, base_abs)
    rels = [Path(os.path.relpath(found, base_abs)).as_posix() for found, _ in unique]
    return [VideoInput(real, rel, folder) for (_, real), rel, folder in zip(unique, rels, _folders(rels))]


def _is_regular(path: Path) -> bool:
    """A regular file (links followed): never a FIFO, a device or a socket, which would block or
    never end when read."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def _one_name_per_file(named: list[tuple[Path, Path]], base: str) -> list[tuple[Path, Path]]:
    """Drop the second and later names of one file (links, hard links), keeping the file's real
    name when it is among them, else the first; one ``warning:`` line per name dropped."""
    groups: dict[tuple[int, int] | Path, list[int]] = {}
    for i, (_, real) in enumerate(named):
        try:
            st = real.stat()
            key: tuple[int, int] | Path = (st.st_dev, st.st_ino)
        except OSError:
            key = real
        groups.setdefault(key, []).append(i)
    keep: set[int] = set()
    for members in groups.values():
        chosen = next((i for i in members if named[i][0] == named[i][1]), members[0])
        keep.add(chosen)
        for i in members:
            if i != chosen:
                log.warning("%s is the same file as %s (a link): annotated once", os.path.relpath(named[i][0], base),
                            os.path.relpath(named[chosen][0], base))
    return [n for i, n in enumerate(named) if i in keep]


def _read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the list file {path}: {exc}") from exc
    files, missing = [], []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        f = Path(line).expanduser()
        f = f if f.is_absolute() else path.parent / f
        (files if _is_regular(f) else missing).append(f)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise UserError(f"{path} names {len(missing)} missing file(s) (or not regular files): {missing[0]}{more}")
    if not files:
        raise UserError(f"the list file {path} names no videos")
    return list(dict.fromkeys(Path(os.path.abspath(f)) for f in files))


# Names a video's folder may not take: the aggregate outputs at the top, a video's own files
# anywhere (a video's folder can hold another's: cam1.mp4 -> cam1/, cam1/b.mp4 -> cam1/b/).
_TOP_RESERVED = frozenset(n.casefold() for n in RESERVED)
_FILE_RESERVED = frozenset(n.casefold() for n in (VIDEO_NAME, JSONL_NAME, SUMMARY_NAME, THUMB_NAME))


def _clean(name: str) -> str:
    """``name`` with every component that would take an output's place made harmless."""
    parts = name.split("/")
    for i, part in enumerate(parts):
        if part.casefold() in _FILE_RESERVED or (i == 0 and part.casefold() in _TOP_RESERVED):
            parts[i] = part.replace(".", "_") if "." in part else f"{part}_"
    return "/".join(parts)


def _folders(rels: list[str]) -> list[str]:
    """One output folder per video, never the same for two (also where case is ignored, as on
    macOS and Windows shares): ``cam1/a.mp4`` → ``cam1/a``; a name whose stem repeats in its folder
    keeps its extension (``a.mp4``, ``a.avi`` → ``a_mp4``, ``a_avi``), and a name still taken gets a
    number (``a_mp4.mov`` beside those → ``a_mp4_mov``, then ``a_mp4_mov_2``...). Depends only on
    the set of names, so a rerun over the same inputs finds the same folders."""
    def dotted(rel: str) -> str:
        pure = PurePosixPath(rel)
        return _clean(str(pure.with_name(pure.name.replace(".", "_"))))

    stems = [_clean(str(PurePosixPath(r).with_suffix(""))) for r in rels]
    stem_count = Counter(s.casefold() for s in stems)
    natural = [stem if stem_count[stem.casefold()] == 1 else dotted(rel) for rel, stem in zip(rels, stems)]
    natural_count = Counter(n.casefold() for n in natural)
    out: list[str | None] = [n if natural_count[n.casefold()] == 1 else None for n in natural]
    taken = {n.casefold() for n in out if n is not None}
    for i in sorted(range(len(rels)), key=lambda k: rels[k]):
        if out[i] is not None:
            continue
        first = candidate = dotted(rels[i])
        k = 1
        while candidate.casefold() in taken:
            k += 1
            candidate = f"{first}_{k}"
        out[i] = candidate
        taken.add(candidate.casefold())
        if candidate != natural[i]:
            log.info("%s: outputs in %s/ (%s/ is another video's)", rels[i], candidate, natural[i])
    return [n for n in out if n is not None]


# --- the unit of work: one video ----------------------------------------------------------------
@dataclass
class VideoTask:
    index: int
    path: str
    rel: str
    out_dir: str  # where the worker writes the annotated video (unless video is False)
    video: bool
    options: dict[str, Any]  # realtime.pipeline.Config fields (--model, --sync, ...)


@dataclass
class VideoResult:
    index: int
    rel: str
    status: str  # ok | failed | interrupted
    error: str | None = None
    frames: int = 0
    seconds: float = 0.0
    worker: str = ""
    summary: dict[str, Any] | None = None
    jsonl: bytes = b""
    thumbnail: bytes | None = None
    video: bool = False  # the annotated video is at OUTPUT/<folder>/annotated.mp4


def process_video(task: VideoTask, progress: Callable[[int], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> VideoResult:
    """Annotate one video (what each worker runs, local or on Ray). The JSONL, summary and thumbnail
    come back in the result for the driver to write (the JSONL is built in memory: no face data
    is written anywhere else); only the annotated video is written here, in its output folder
    under a temporary name, renamed when complete. ``should_stop()`` true: the video stops as at
    Ctrl-C (checked every frame; status ``interrupted``)."""
    import cv2

    from .pipeline import Config, frame_record, run
    from .summary import TrackSummary

    started = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    result = VideoResult(task.index, task.rel, "failed", worker=worker)
    summary = TrackSummary(source=task.rel)
    thumb: list[bytes] = []
    lines: list[str] = []
    privacy = bool(task.options.get("privacy"))

    def observe(frame: Any, faces: Any, annotated: Any, pipeline: Any) -> None:
        summary.observe(frame, faces, annotated, pipeline)
        # the bytes realtime.sinks.JsonlSink writes
        lines.append(json.dumps(frame_record(frame, faces, privacy=privacy), separators=(", ", ": ")) + "\n")
        if not thumb:
            h, w = annotated.shape[:2]
            small = annotated if w <= THUMB_WIDTH else cv2.resize(
                annotated, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 85])
            if ok:
                thumb.append(buf.tobytes())

    last = [time.perf_counter(), 0]

    def on_frame(done: int, total: int | None) -> None:
        if should_stop is not None and should_stop():
            raise KeyboardInterrupt  # run() stops as at Ctrl-C: nothing half-written is kept
        now = time.perf_counter()
        if progress is not None and now - last[0] >= 0.2:
            progress(done - last[1])
            last[0], last[1] = now, done

    out_dir = Path(task.out_dir)
    final_video = out_dir / VIDEO_NAME
    tmp_video = out_dir / f".{final_video.stem}.partial-batch-{os.getpid()}{final_video.suffix}"
    config = Config(source=task.path, output=tmp_video if task.video else None, jsonl=None, display=False,
                    progress=False, observer=observe, **task.options)
    try:
        if should_stop is not None and should_stop():
            raise KeyboardInterrupt
        stats = run(config, on_frame=on_frame)
    except UserError as exc:
        result.error = str(exc.__cause__ or exc)  # without "kept ..." (nothing is kept)
    except KeyboardInterrupt:
        result.status = "interrupted"
    except Exception as exc:  # a bug, or a library failing on odd input: the batch goes on
        log.debug("%s failed", task.rel, exc_info=True)
        result.error = f"internal error: {type(exc).__name__}: {exc}"
    else:
        if stats.interrupted:
            result.status = "interrupted"
        else:
            try:
                if task.video and tmp_video.exists():
                    os.replace(tmp_video, final_video)
                    result.video = True
            except OSError as exc:
                result.error = f"cannot write {final_video}: {exc.strerror or exc}"
            else:
                result.status = "ok"
                result.frames = stats.frames
                result.jsonl = "".join(lines).encode("utf-8")
                result.summary = summary.result()
                result.thumbnail = thumb[0] if thumb else None
    finally:
        if progress is not None and summary.frames > last[1]:
            progress(summary.frames - last[1])
        tmp_video.unlink(missing_ok=True)
    result.seconds = round(time.perf_counter() - started, 3)
    return result


# --- local pool ------------------------------------------------------------------------------------
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
        from .native import filter_native_stderr

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

        with _helpers_immune_to_sighup():
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


# --- Ray -------------------------------------------------------------------------------------------
def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise UserError(f"--ray needs Ray, which is not installed: pip install -r {REQUIREMENTS_BATCH} "
                        f"({exc})") from exc
    return ray


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with one line, when a Ray address does not answer (ray.init would wait long)."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"--ray {address}: expected auto, local, HOST:PORT or ray://HOST:PORT")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise UserError(f"the Ray cluster at {address} does not answer ({exc.strerror or exc}); "
                        "is `ray start --head` running there and the port reachable?") from exc


def _one_line(exc: BaseException) -> str:
    """A Ray exception as one readable line: its cause when it has one, without colour codes."""
    cause = getattr(exc, "cause", None) or exc.__cause__
    if isinstance(cause, BaseException) and cause is not exc:
        exc = cause
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


def _source_root() -> str | None:
    """The checkout this package runs from (None when it is installed): Ray workers get it on their
    PYTHONPATH, so a cluster whose nodes share this path (or this one machine) needs no install."""
    root = Path(__file__).resolve().parent.parent
    return str(root) if (root / "pyproject.toml").is_file() and (root / "realtime").is_dir() else None


def ray_init(mode: str, num_cpus: int | None) -> Any:
    """Join (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``) or start (``local``) a Ray cluster."""
    ray = _import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}
    root = _source_root()
    if root is not None:
        kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}}
    if mode == "local":
        kwargs.update(address="local", num_cpus=num_cpus or _cores(), include_dashboard=False)
    else:
        if mode != "auto":
            _probe(mode)
        kwargs["address"] = mode
    from .native import quiet_stderr

    pgid = os.getpgrp()
    utils = getattr(getattr(ray, "_private", None), "utils", None)
    set_sigterm = getattr(utils, "set_sigterm_handler", None)
    try:  # joining: Ray's C++ client repeats its connection warnings on fd 2 until it gives up
        # Ray replaces the SIGTERM handler while it starts (its own exits with status 1 and leaves
        # our workers and partial files behind): ours stays, and a signal now is acted on after.
        with STOP.deferred(), _helpers_immune_to_sighup(), \
                quiet_stderr() if mode != "local" else contextlib.nullcontext():
            if set_sigterm is not None:
                utils.set_sigterm_handler = lambda handler: None
            try:
                ray.init(**kwargs)
            finally:
                if set_sigterm is not None:
                    utils.set_sigterm_handler = set_sigterm
                STOP.install()
                _restore_pgid(pgid)
    except Exception as exc:  # ConnectionError, AuthenticationError, RuntimeError...: one line for the user
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        cause = f" ({_one_line(exc.__cause__)})" if exc.__cause__ is not None else ""
        if "AuthToken" in cause or "AuthenticationError" in cause:
            cause = (" (the cluster uses token authentication: set RAY_AUTH_MODE=token and give this machine the "
                     "head's token, ~/.ray/auth_token or RAY_AUTH_TOKEN; see the README, 'Many videos')")
        raise UserError(f"cannot {'start' if mode == 'local' else 'join'} Ray ({mode}): {first}{cause}") from exc
    return ray


def _restore_pgid(pgid: int) -> None:
    """``ray.init(address="local")`` makes the driver leader of a new process group (for Ray's
    reaper) when it was not one: back to the user's group, so that Ctrl-C and ``kill -- -PGID``
    still reach the batch; Ray's processes stay in their own group and the driver stops them."""
    if os.getpgrp() != pgid:
        with contextlib.suppress(OSError):
            os.setpgid(0, pgid)


def _ray_check(options: dict[str, Any]) -> str:
    """Runs on each node before any video: can it import this package, load the model and the
    detector with these options?"""
    from . import __version__

    try:
        check_pipeline(options)
    except UserError as exc:
        raise UserError(f"on {socket.gethostname()}: {exc}") from None
    return f"{socket.gethostname()} realtime {__version__}"


def ray_preflight(ray: Any, options: dict[str, Any]) -> list[str]:
    """One small task on every alive node with CPUs; a node that cannot run the batch is bad input."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    check = ray.remote(num_cpus=1, max_retries=0)(_ray_check)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
    refs = [check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(options)
            for n in nodes]
    out = []
    for node, ref in zip(nodes, refs):
        try:
            out.append(ray.get(ref, timeout=300))
        except Exception as exc:
            raise UserError(f"Ray node {node.get('NodeManagerAddress', '?')} cannot annotate videos: "
                            f"{_one_line(exc)} (every node needs this package, requirements.txt and "
                            f"{REQUIREMENTS_BATCH}: see the README, 'Many videos')") from exc
    if not out:
        raise UserError("the Ray cluster has no node with a free CPU")
    return out


def _ray_task(task: VideoTask) -> VideoResult:
    return process_video(task)


def run_ray(ray: Any, tasks: list[VideoTask], max_in_flight: int | None,
            on_result: Callable[[VideoResult], None]) -> None:
    remote = ray.remote(num_cpus=1, max_retries=1)(_ray_task)  # retried only when a node/worker is lost
    todo = deque(tasks)
    refs: dict[Any, VideoTask] = {}
    try:
        while todo or refs:
            while todo and (max_in_flight is None or len(refs) < max_in_flight):
                task = todo.popleft()
                refs[remote.remote(task)] = task
            done, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
            for ref in done:
                task = refs.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # RayTaskError, WorkerCrashedError, NodeDiedError...
                    result = VideoResult(task.index, task.rel, "failed", error=f"Ray task failed: {_one_line(exc)}")
                on_result(result)
    except KeyboardInterrupt:
        _ray_cancel(ray, list(refs))
        raise


def _ray_cancel(ray: Any, refs: list[Any], grace_s: float = 10.0) -> None:
    """Stop running tasks: KeyboardInterrupt in each (its video stops cleanly and removes its
    temporary file), then, after ``grace_s`` or a second signal, kill the workers still at it."""
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=False)
    deadline = time.monotonic() + grace_s
    pending = refs
    while pending and time.monotonic() < deadline and not STOP.hurry:
        try:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
        except Exception:
            break
    for ref in pending:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=True)


def _process_tree(root: int) -> dict[int, str]:
    """Every descendant of ``root`` (Linux /proc; empty elsewhere): pid -> start time, so that a
    pid reused later is never taken for one of them."""
    children: dict[int, list[int]] = {}
    start: dict[int, str] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        start[int(entry.name)] = fields[19]
    out: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in out and pid in start:
            out[pid] = start[pid]
            todo.extend(children.get(pid, []))
    return out


def _still_running(pid: int, started: str) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[19] == started and fields[0] != "Z"


def ray_shutdown(ray: Any, local: bool, wait_s: float = 10.0) -> None:
    """Disconnect; with ``--ray local``, stop every process that Ray started for the batch: those
    ``ray.shutdown`` leaves (its agents outlive their raylet now and then) are killed."""
    tree = _process_tree(os.getpid()) if local else {}
    try:
        with STOP.deferred():
            ray.shutdown(**({"wait_for_processes": True} if local else {}))
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        log.debug("ray.shutdown: %s", exc)
    deadline = time.monotonic() + wait_s
    left = {pid: t for pid, t in tree.items() if _still_running(pid, t)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {pid: t for pid, t in left.items() if _still_running(pid, t)}
    for pid in left:
        log.debug("killing Ray process %d, still running after ray.shutdown", pid)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for pid in left:  # our own children: reaped here; others are reaped by their parent or init
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)


# --- the driver --------------------------------------------------------------------------------
def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _frame_count(path: Path) -> int:
    """Frames the container says it has (0 when unknown or unreadable): the progress bar's total."""
    import cv2

    from .native import quiet_stderr

    with quiet_stderr():  # FFmpeg's notes on damaged files; the worker reports them as one line
        cap = cv2.VideoCapture(str(path))
        try:
            return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))) if cap.isOpened() else 0
        finally:
            cap.release()


class _BadStateError(Exception):
    """A state file that cannot be trusted (its message says why)."""


STATE_MAX_BYTES = 1 << 28  # a summary.json larger than this was not written by a batch


def _open_state(path: Path) -> int:
    """A descriptor on ``path`` only if it is a regular file: never a link, a FIFO (which would
    block), a device or a folder (O_NONBLOCK, O_NOFOLLOW, then fstat on what was opened)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise _BadStateError(f"{path.name} is missing") from None
    except OSError as exc:
        why = "a link" if path.is_symlink() else exc.strerror
        raise _BadStateError(f"{path.name} cannot be read ({why})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _BadStateError(f"{path.name} is not a regular file")
    return fd


def _count_lines(path: Path) -> int:
    with os.fdopen(_open_state(path), "rb") as fh:
        return sum(1 for _ in fh)


def _load_state_json(path: Path) -> dict[str, Any]:
    with os.fdopen(_open_state(path), "rb") as fh:
        data = fh.read(STATE_MAX_BYTES + 1)
    if len(data) > STATE_MAX_BYTES:
        raise _BadStateError(f"{path.name} is larger than {STATE_MAX_BYTES >> 20} MiB")
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _BadStateError(f"{path.name} is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise _BadStateError(f"{path.name} is not a JSON object")
    return value


def _number(value: Any, none: bool = False) -> bool:
    if value is None:
        return none
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def summary_problem(summary: dict[str, Any], rel: str) -> str | None:
    """Why a video's summary.json cannot be used as it is (None: it can): every field that the
    aggregate, the CSV and the report read, with its type."""
    if summary.get("source") != rel:
        return f"it is the summary of {summary.get('source')!r}, not of {rel!r}"
    if not _count(summary.get("frames")):
        return "frames is not a count"
    for key in ("last_time_s", "first_time_s"):
        if not _number(summary.get(key), none=True):
            return f"{key} is not a number"
    if not (summary.get("model") is None or isinstance(summary.get("model"), str)):
        return "model is not a name"
    tracks = summary.get("distinct_tracks")
    if not isinstance(tracks, dict) or not all(_count(tracks.get(k)) for k in (*LABELS, "total")):
        return "distinct_tracks is not a count per label"
    dwell = summary.get("dwell_s")
    if not isinstance(dwell, dict) or not all(_number(dwell.get(k), none=True) for k in ("mean", "max")):
        return "dwell_s is not {mean, max}"
    if not _number(summary.get("timeline_bin_s")) or summary["timeline_bin_s"] <= 0:
        return "timeline_bin_s is not a positive number"
    timeline = summary.get("timeline")
    if not isinstance(timeline, list) or not all(
            isinstance(b, dict) and _number(b.get("start_s")) and all(_count(b.get(k)) for k in LABELS)
            for b in timeline):
        return "timeline is not a list of per-label counts"
    records = summary.get("tracks")
    if not isinstance(records, list) or not all(
            isinstance(t, dict) and t.get("label") in LABELS and _count(t.get("frames_seen"))
            and all(_number(t.get(k)) for k in ("dwell_s", "first_seen_s", "last_seen_s"))
            and all(_number(t.get(k), none=True) for k in ("p_female", "mean_p_female", "apparent_age",
                                                           "mean_apparent_age"))
            for t in records):
        return "tracks is not a list of track records"
    return None


def completed_entry(video: VideoInput, output: Path, need_video: bool) -> dict[str, Any] | None:
    """The aggregate entry of a video whose outputs are complete (for --resume), else None.

    Nothing read is trusted: a summary.json that is there but does not check out (not a regular
    file, not JSON, a field of the wrong type, another video's, a JSONL of another length, no
    annotated video when one is wanted) means the video is annotated again, with one
    ``warning:`` line. Special files are never opened (a FIFO would block)."""
    folder = output / video.folder
    summary_path = folder / SUMMARY_NAME
    if not os.path.lexists(summary_path):
        return None  # never finished: annotated (again) without a word
    try:
        summary = _load_state_json(summary_path)
        problem = summary_problem(summary, video.rel)
        if problem is not None:
            raise _BadStateError(f"{SUMMARY_NAME}: {problem}")
        lines = _count_lines(folder / JSONL_NAME)
        if lines != summary["frames"]:
            raise _BadStateError(f"{JSONL_NAME} has {lines} lines for {summary['frames']} frames")
        video_ok = _is_regular(folder / VIDEO_NAME) and not (folder / VIDEO_NAME).is_symlink()
        if need_video and not video_ok:
            raise _BadStateError(f"{VIDEO_NAME} is missing or not a regular file")
    except _BadStateError as exc:
        log.warning("%s: its outputs in %s/ do not check out (%s); annotating it again", video.rel,
                    video.folder, exc)
        return None
    entry = _entry(video, "ok", None, summary, output, resumed=True)
    entry["outputs"]["video"] = f"{video.folder}/{VIDEO_NAME}" if video_ok else None
    return entry


def _entry(video: VideoInput, status: str, error: str | None, summary: dict[str, Any] | None, output: Path,
           resumed: bool = False, seconds: float | None = None, worker: str | None = None) -> dict[str, Any]:
    folder = output / video.folder
    s = summary or {}
    return {
        "video": video.rel, "folder": video.folder, "status": status, "error": error, "resumed": resumed,
        "frames": s.get("frames", 0), "last_time_s": s.get("last_time_s"), "model": s.get("model"),
        "distinct_tracks": s.get("distinct_tracks", {**dict.fromkeys(LABELS, 0), "total": 0}),
        "dwell_s": s.get("dwell_s", {"mean": None, "max": None}),
        "timeline_bin_s": s.get("timeline_bin_s", 60.0), "timeline": s.get("timeline", []),
        "tracks": s.get("tracks", []),
        "outputs": {name: f"{video.folder}/{fname}" if (folder / fname).is_file() and status == "ok" else None
                    for name, fname in (("video", VIDEO_NAME), ("jsonl", JSONL_NAME), ("summary", SUMMARY_NAME),
                                        ("thumbnail", THUMB_NAME))},
        "processing_s": seconds, "worker": worker,
    }


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a batch output: under a temporary name beside it (``realtime.files.temp_name``,
    registered so that it is removed on every exit path short of SIGKILL), then renamed into place.
    Unlike ``realtime.files.write_bytes_atomic``, whatever is at the name (a FIFO, a device, a link
    left there) is replaced, never written through: a batch's outputs are regular files in OUTPUT
    (a FIFO at the name would block the batch forever)."""
    from . import files

    files.make_folder(path.parent)
    tmp = files.temp_name(path)
    files.register_temp(tmp)
    try:
        tmp.unlink(missing_ok=True)
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        files.discard(tmp)
        raise files.write_error(path, exc) from exc
    except BaseException:
        files.discard(tmp)
        raise
    files.publish(tmp, path)


def _sweep_partials(folders: list[Path]) -> None:
    """Remove this batch's temporary files (never at a final name) after an interruption."""
    for folder in folders:
        with contextlib.suppress(OSError):
            for p in folder.iterdir():
                if p.name.startswith(".") and ".partial-" in p.name and not p.is_symlink() and p.is_file():
                    p.unlink(missing_ok=True)


def _remove_unfinished(folders: list[Path]) -> None:
    """A video whose summary.json is not there is not done: what a worker finished of it (its
    annotated video, renamed just before an interruption) is removed, so that an output folder
    holds a complete set of outputs or none."""
    for folder in folders:
        if os.path.lexists(folder / SUMMARY_NAME):
            continue
        for name in (VIDEO_NAME, JSONL_NAME, THUMB_NAME):
            path = folder / name
            if path.is_file() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.unlink()


def check_pipeline(options: dict[str, Any]) -> None:
    """Load the model and the face detector once with the batch's options, before any video (on
    this machine; on a cluster, on each node): a missing or bad model, bad metadata, an unknown
    detector or backend is bad input (exit 2), not a failure of every video."""
    from .classifier import GenderClassifier
    from .native import quiet_stderr

    model = Path(options.get("model") or GENDER_MODEL)
    if not model.is_file():
        raise UserError(f"model not found: {model}")
    detector = str(options.get("detector") or "auto")
    name = "full" if detector == "auto" else detector  # what "auto" is for video files
    with quiet_stderr():  # LiteRT's start-up notes
        try:
            GenderClassifier(model, num_threads=1)
        except UserError:
            raise
        except Exception as exc:  # a file that is not a model: LiteRT's ValueError, RuntimeError...
            raise UserError(f"cannot load the model {model}: {type(exc).__name__}: {exc}") from exc
        from .face_detector import FaceDetector

        try:
            FaceDetector(name, mode="video", min_score=float(options.get("min_face_score", 0.5)),
                         backend=str(options.get("detector_backend") or "auto"), num_threads=1).close()
        except UserError as exc:
            raise UserError(f"--detector {detector}: {exc} (auto, short, full or a .tflite path)") from exc
        except Exception as exc:
            raise UserError(f"--detector {detector}: cannot load it: {type(exc).__name__}: {exc}") from exc


@dataclass
class BatchOptions:
    input: str
    output: Path
    workers: int | None = None
    ray: str | None = None
    video: bool = True
    resume: bool = False
    report: bool = True
    progress: bool = True
    pipeline: dict[str, Any] = field(default_factory=dict)


def run_batch(opts: BatchOptions) -> tuple[dict[str, Any], int]:
    """Annotate every input video; returns the aggregate and the exit status (0 or 3).

    A stop signal (see :class:`_StopSignals`) raises ``KeyboardInterrupt`` out of here, after the
    workers are stopped and reaped, the Ray runtime it started is shut down and the partial
    outputs are removed; no aggregate is written then."""
    started = time.perf_counter()
    from .sinks import check_writable

    output = opts.output.expanduser()
    if not str(opts.output).strip():
        raise UserError("--output is empty: give a folder")
    if output.exists() and not output.is_dir():
        raise UserError(f"output {output} exists and is not a folder")
    videos = collect_inputs(opts.input, output)
    check_writable(output, is_dir=True)
    if opts.report:
        from .batch_report import NO_PLOTS, can_plot

        if not can_plot():  # said before the work, not after hours of it
            log.warning("%s (report.html gets its tables only; --no-report for none)", NO_PLOTS)
    if opts.ray in (None, "local"):  # on a cluster, each node is checked (ray_preflight)
        check_pipeline(opts.pipeline)
    output.mkdir(parents=True, exist_ok=True)
    output = output.resolve()

    entries: dict[int, dict[str, Any]] = {}
    tasks = []
    for i, video in enumerate(videos):
        if opts.resume and (done := completed_entry(video, output, opts.video)) is not None:
            entries[i] = done
            continue
        _sweep_partials([output / video.folder])
        tasks.append(VideoTask(i, str(video.path), video.rel, str(output / video.folder), opts.video,
                               dict(opts.pipeline)))
    if opts.resume and entries:
        log.info("resuming: %d of %d videos are complete and skipped", len(entries), len(videos))
    max_frames = opts.pipeline.get("max_frames")  # (probed before Ray starts threads: see native.quiet_stderr)
    totals = {t.index: min(_frame_count(Path(t.path)), max_frames or 1 << 62) for t in tasks}
    mode = "local" if not opts.ray else "ray-local" if opts.ray == "local" else "ray"
    workers = opts.workers or _cores()
    ray = _import_ray() if tasks and opts.ray else None
    ray_start_s = None
    pool: LocalPool | None = None
    bar = None
    failed = 0
    finished = False
    reported: dict[int, int] = {}

    def keep(result: VideoResult) -> None:
        """A finished video's JSONL, thumbnail and summary (last: it marks the video complete)."""
        video = videos[result.index]
        folder = output / video.folder
        try:
            with STOP.deferred():  # all three or, with the summary missing, a video done again
                if result.thumbnail:
                    write_bytes_atomic(folder / THUMB_NAME, result.thumbnail)
                write_bytes_atomic(folder / JSONL_NAME, result.jsonl)
                write_bytes_atomic(folder / SUMMARY_NAME, dumps(result.summary or {}).encode("utf-8"))
        except OSError as exc:  # (write errors are UserErrors already; this is anything else)
            raise UserError(f"cannot write the outputs of {video.rel} in {folder}: "
                            f"{exc.strerror or exc}") from exc
        entries[result.index] = _entry(video, result.status, result.error, result.summary, output,
                                       seconds=result.seconds, worker=result.worker)

    def on_result(result: VideoResult) -> None:
        nonlocal failed
        video = videos[result.index]
        if result.status == "interrupted":
            raise KeyboardInterrupt
        if result.status == "ok":
            keep(result)
        else:
            failed += 1
            log.warning("%s failed: %s", video.rel, result.error)
            entries[result.index] = _entry(video, result.status, result.error, result.summary, output,
                                           seconds=result.seconds, worker=result.worker)
        bar.update(max(0, result.frames - reported.get(result.index, 0)))
        done = sum(1 for t in tasks if t.index in entries)
        bar.set_description(f"{done}/{len(tasks)} videos" + (f", {failed} failed" if failed else ""))

    def on_frames(index: int, n: int) -> None:
        reported[index] = reported.get(index, 0) + n
        bar.update(n)

    try:
        if ray is not None:
            t0 = time.perf_counter()
            ray_init(opts.ray, opts.workers)
            nodes = ray_preflight(ray, dict(opts.pipeline))
            log.debug("Ray nodes: %s", "; ".join(nodes))
            ray_start_s = round(time.perf_counter() - t0, 3)
            log.info("Ray %s: %s CPUs, %s in %.1f s", opts.ray, ray.cluster_resources().get("CPU", "?"),
                     "started" if opts.ray == "local" else "joined", ray_start_s)
        bar = tqdm(total=sum(totals.values()) or None, unit="frame", desc=f"0/{len(tasks)} videos",
                   disable=not opts.progress or not tasks, dynamic_ncols=True)
        if ray is not None:
            run_ray(ray, tasks, opts.workers if opts.ray != "local" else None, on_result)
        elif tasks:
            pool = LocalPool(min(workers, len(tasks)))
            pool.run(tasks, on_frames, on_result)
        finished = True
    except KeyboardInterrupt:
        log.debug("interrupted (%s): stopping the workers", STOP.name())
        if pool is not None:
            pool.interrupt(keep, hurry=lambda: STOP.hurry)
        raise
    finally:
        with STOP.deferred():  # the first signal is already being handled (or none came): finish cleaning up
            if bar is not None:
                bar.close()
            if pool is not None:
                pool.close()
            if ray is not None:
                ray_shutdown(ray, local=opts.ray == "local")
            if not finished:  # (after the workers are gone: none can write again)
                folders = [output / v.folder for v in videos]
                _sweep_partials(folders)
                _remove_unfinished([output / videos[t.index].folder for t in tasks if t.index not in entries])
    aggregate = {
        "schema": 1, "input": opts.input, "mode": mode, "workers": None if mode == "ray" else workers,
        "video": opts.video, "options": {k: str(v) if isinstance(v, Path) else v for k, v in opts.pipeline.items()},
        "totals": _totals([entries[i] for i in sorted(entries)], time.perf_counter() - started),
        "ray_start_s": ray_start_s,
        "videos": [entries[i] for i in sorted(entries)],
    }
    write_aggregate(output, aggregate)
    if opts.report:
        from .batch_report import write_report

        write_report(output, aggregate)
    return aggregate, EXIT_SOME_FAILED if failed else 0


def _totals(entries: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    ok = [e for e in entries if e["status"] == "ok"]
    tracks = {k: sum(e["distinct_tracks"].get(k, 0) for e in ok) for k in (*LABELS, "total")}
    return {"videos": len(entries), "ok": len(ok), "failed": len(entries) - len(ok),
            "resumed": sum(1 for e in entries if e["resumed"]), "frames": sum(e["frames"] for e in ok),
            "distinct_tracks": tracks, "seconds": round(seconds, 3)}


CSV_COLUMNS = ("video", "status", "error", "frames", "last_time_s", "tracks", *LABELS, "dwell_mean_s", "dwell_max_s",
               "folder", "processing_s")


def write_aggregate(output: Path, aggregate: dict[str, Any]) -> None:
    """OUTPUT/summary.json and OUTPUT/summary.csv (one row per video, failed ones with their error)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for e in aggregate["videos"]:
        d = e["distinct_tracks"]
        writer.writerow([e["video"], e["status"], e["error"] or "", e["frames"], _blank(e["last_time_s"]),
                         d.get("total", 0), *(d.get(k, 0) for k in LABELS), _blank(e["dwell_s"].get("mean")),
                         _blank(e["dwell_s"].get("max")), e["folder"], _blank(e["processing_s"])])
    write_bytes_atomic(output / "summary.csv", buf.getvalue().encode("utf-8"))
    write_bytes_atomic(output / "summary.json", dumps(aggregate).encode("utf-8"))


def _blank(value: Any) -> Any:
    return "" if value is None else value


# --- command line --------------------------------------------------------------------------------
def _not_empty(text: str) -> str:
    """``--input ''`` would mean the current folder: refused (say ``.``)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty (use . for the current folder)")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=prog_name("python -m realtime.batch"), description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    p.add_argument("--input", required=True, type=_not_empty, metavar="DIR|GLOB|LIST.txt",
                   help="a folder (searched recursively), a glob pattern (quote it; ** recurses) or a text "
                        "file with one video path per line (relative to the file)")
    p.add_argument("--output", required=True, type=path_arg, metavar="DIR",
                   help="results: OUTPUT/<relative path>/ per video, summary.csv/json, report.html")
    p.add_argument("--workers", type=positive_int,
                   help=f"local worker processes (default: one per core, {_cores()} here); with --ray local the "
                        "CPUs Ray may use; with a cluster, the most videos in flight (default: all)")
    p.add_argument("--ray", metavar="auto|local|ADDRESS",
                   help="run each video as a Ray task: local starts Ray on this machine, auto joins the cluster "
                        f"this machine belongs to, HOST:PORT or ray://HOST:PORT joins that one (needs "
                        f"pip install -r {REQUIREMENTS_BATCH})")
    p.add_argument("--no-video", action="store_true", help="no annotated videos: JSONL, summaries and report only")
    p.add_argument("--resume", action="store_true",
                   help="skip videos whose outputs are complete (after an interrupted or partly failed batch)")
    p.add_argument("--no-report", action="store_true", help="no report.html and plots")
    g = p.add_argument_group("per video (as in face-gender)")
    add_pipeline_args(g, threads=1, model_default=None,
                      model_help=f"gender model .tflite, metadata .json beside it, at this path on every node "
                                 f"(default: the {GENDER_MODEL.name} each worker's installation ships)",
                      detector_help="auto (= full for files), short, full, or a .tflite path",
                      threads_help="classifier and detector threads in each worker (default 1: one worker per core)")
    g.add_argument("--max-frames", type=positive_int, help="at most N frames of each video")
    g = p.add_argument_group("output")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    g.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return p


def options_from_args(args: argparse.Namespace) -> BatchOptions:
    pipeline = {**pipeline_kwargs(args), "detector_threads": args.threads, "max_frames": args.max_frames}
    if args.model is not None:
        pipeline["model"] = args.model.expanduser().resolve()
    return BatchOptions(input=args.input, output=args.output, workers=args.workers, ray=args.ray,
                        video=not args.no_video, resume=args.resume, report=not args.no_report,
                        progress=not args.no_progress and not args.quiet, pipeline=pipeline)


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 all annotated, 3 some failed, 2 unusable input, 130 stopped by SIGINT
    (Ctrl-C), SIGTERM or SIGHUP."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    STOP.install()
    try:
        if args.ray:
            _import_ray()  # a missing Ray is bad input: say so before any work
        aggregate, status = run_batch(options_from_args(args))
    except UserError as exc:
        if STOP.signum is not None:  # a write failing under a stop signal: the signal is the news
            return _interrupted()
        return report_user_error(exc, args.verbose)
    except KeyboardInterrupt:
        return _interrupted()
    t = aggregate["totals"]
    log.info("%d videos, %d frames in %.1f s: %d annotated%s, %d failed; %s", t["videos"], t["frames"],
             t["seconds"], t["ok"], f" ({t['resumed']} already done)" if t["resumed"] else "", t["failed"],
             Path(args.output) / ("report.html" if not args.no_report else "summary.csv"))
    return status


def _interrupted() -> int:
    with STOP.deferred():
        print(f"error: interrupted ({STOP.name()}); finished videos are complete (use --resume to go on)",
              file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
