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
`error:` line on stderr), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import glob
import io
import logging
import multiprocessing as mp
import os
import queue
import re
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .cli import add_version, positive_int, prog_name, report_user_error, setup_logging
from .config import add_pipeline_args, pipeline_kwargs
from .errors import UserError
from .paths import GENDER_MODEL
from .summary import LABELS, dumps, write_json_atomic

log = logging.getLogger("realtime.batch")

EXIT_SOME_FAILED = 3
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
VIDEO_NAME, JSONL_NAME, SUMMARY_NAME, THUMB_NAME = "annotated.mp4", "faces.jsonl", "summary.json", "thumbnail.jpg"
RESERVED = frozenset({"summary.csv", "summary.json", "report.html", "report_files"})
THUMB_WIDTH = 480
REQUIREMENTS_BATCH = "requirements-batch.txt"


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
    """Videos named by a folder (recursive), a glob pattern or a list file (one path per line)."""
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
        base = Path(os.path.commonpath([str(f.parent) for f in files]))
    elif glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True) if Path(p).is_file())
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
    files = [f.resolve() for f in files]
    inside = [f for f in files if _inside(f, output)]
    if inside:
        raise UserError(f"input {inside[0]} is inside the output folder {output}; choose another output folder")
    base = base.resolve()
    rels = [f.relative_to(base).as_posix() for f in files]
    return [VideoInput(f, r, d) for f, r, d in zip(files, rels, _folders(rels))]


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
        (files if f.is_file() else missing).append(f)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise UserError(f"{path} names {len(missing)} missing file(s): {missing[0]}{more}")
    if not files:
        raise UserError(f"the list file {path} names no videos")
    unique = list(dict.fromkeys(f.resolve() for f in files))
    return unique


def _folders(rels: list[str]) -> list[str]:
    """``cam1/a.mp4`` → ``cam1/a``; a name whose stem repeats in its folder keeps its extension
    (``a_mp4``), and so does one that would shadow an aggregate output."""
    stems = [str(Path(r).with_suffix("")) for r in rels]
    seen: dict[str, int] = {}
    for s in stems:
        seen[s] = seen.get(s, 0) + 1
    out = []
    for rel, stem in zip(rels, stems):
        if seen[stem] > 1 or stem in RESERVED or stem.split("/", 1)[0] in RESERVED:
            stem = str(Path(rel).with_name(Path(rel).name.replace(".", "_")))
        out.append(stem)
    return out


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


def process_video(task: VideoTask, progress: Callable[[int], None] | None = None) -> VideoResult:
    """Annotate one video (what each worker runs, local or on Ray). The JSONL, summary and thumbnail
    come back in the result for the driver to write; only the annotated video is written here
    (under a temporary name, renamed when complete)."""
    import cv2

    from .pipeline import Config, run
    from .summary import TrackSummary

    started = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    result = VideoResult(task.index, task.rel, "failed", worker=worker)
    summary = TrackSummary(source=task.rel)
    thumb: list[bytes] = []

    def observe(frame: Any, faces: Any, annotated: Any, pipeline: Any) -> None:
        summary.observe(frame, faces, annotated, pipeline)
        if not thumb:
            h, w = annotated.shape[:2]
            small = annotated if w <= THUMB_WIDTH else cv2.resize(
                annotated, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 85])
            if ok:
                thumb.append(buf.tobytes())

    last = [time.perf_counter(), 0]

    def on_frame(done: int, total: int | None) -> None:
        now = time.perf_counter()
        if progress is not None and now - last[0] >= 0.2:
            progress(done - last[1])
            last[0], last[1] = now, done

    out_dir = Path(task.out_dir)
    final_video = out_dir / VIDEO_NAME
    tmp_video = out_dir / f".{final_video.stem}.partial-batch-{os.getpid()}{final_video.suffix}"
    with tempfile.TemporaryDirectory(prefix="face-gender-batch-") as tmp:
        jsonl = Path(tmp) / JSONL_NAME
        config = Config(source=task.path, output=tmp_video if task.video else None, jsonl=jsonl, display=False,
                        progress=False, observer=observe, **task.options)
        try:
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
                result.status = "ok"
                result.frames = stats.frames
                result.jsonl = jsonl.read_bytes() if jsonl.exists() else b""
                result.summary = summary.result()
                result.thumbnail = thumb[0] if thumb else None
                if task.video and tmp_video.exists():
                    os.replace(tmp_video, final_video)
                    result.video = True
        finally:
            if progress is not None and summary.frames > last[1]:
                progress(summary.frames - last[1])
            tmp_video.unlink(missing_ok=True)
    result.seconds = round(time.perf_counter() - started, 3)
    return result


# --- local pool ------------------------------------------------------------------------------------
def _worker_main(wid: int, inbox: Any, outbox: Any, verbose: bool) -> None:
    """A local worker process: videos from ``inbox`` until None. SIGINT is ignored between videos;
    while one runs, the pipeline's own handler stops it cleanly (Ctrl-C reaches every process).
    Its failures reach the user through the driver, so it logs errors only (unless --verbose)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(verbose)
    if not verbose:
        logging.getLogger().setLevel(logging.ERROR)
        from .native import filter_native_stderr

        # Before any thread (the queues' feeders): LiteRT's "Created TensorFlow Lite XNNPACK delegate"
        # and FFmpeg's notes stay off the terminal even once the worker has threads (-v keeps them).
        filter_native_stderr()
    while True:
        task = inbox.get()
        if task is None:
            return
        result = process_video(task, lambda n: outbox.put(("frames", wid, n)))
        outbox.put(("done", wid, result))


@dataclass
class _Worker:
    process: Any
    inbox: Any
    task: VideoTask | None = None


class LocalPool:
    """N worker processes; each gets one video at a time, so a crashed worker (a native library
    dying on a damaged file) fails exactly the video it held and is replaced."""

    def __init__(self, workers: int) -> None:
        self.verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
        self.ctx = mp.get_context("spawn")  # no fork of a process that may hold threads
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
                task = self.workers[wid].task
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
                del self.workers[wid]
                on_result(VideoResult(task.index, task.rel, "failed",
                                      error=f"worker process died (exit code {code}) while annotating it"))
                if todo:
                    self._assign(self._spawn(), todo)

    def interrupt(self, grace_s: float = 20.0) -> None:
        """Stop every worker: SIGINT (the running video stops cleanly), then terminate."""
        for worker in self.workers.values():
            if worker.process.is_alive() and worker.process.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGINT)
                worker.inbox.put(None)  # and no next video
        deadline = time.monotonic() + grace_s
        for worker in self.workers.values():
            worker.process.join(timeout=max(0.1, deadline - time.monotonic()))
        self.close()

    def close(self) -> None:
        for worker in self.workers.values():
            if worker.process.is_alive():
                with contextlib.suppress(Exception):
                    worker.inbox.put(None)
        for worker in self.workers.values():
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout=5)
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

    try:  # joining: Ray's C++ client repeats its connection warnings on fd 2 until it gives up
        with quiet_stderr() if mode != "local" else contextlib.nullcontext():
            ray.init(**kwargs)
    except Exception as exc:  # ConnectionError, AuthenticationError, RuntimeError...: one line for the user
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        cause = f" ({_one_line(exc.__cause__)})" if exc.__cause__ is not None else ""
        if "AuthToken" in cause or "AuthenticationError" in cause:
            cause = (" (the cluster uses token authentication: set RAY_AUTH_MODE=token and give this machine the "
                     "head's token, ~/.ray/auth_token or RAY_AUTH_TOKEN; see the README, 'Many videos')")
        raise UserError(f"cannot {'start' if mode == 'local' else 'join'} Ray ({mode}): {first}{cause}") from exc
    return ray


def _ray_check(model: str | None) -> str:
    """Runs on each node before any video: can it import this package and find the model?"""
    from . import __version__

    path = Path(model) if model else GENDER_MODEL
    if not path.is_file():
        raise UserError(f"model not found on {socket.gethostname()}: {path}")
    return f"{socket.gethostname()} realtime {__version__}"


def ray_preflight(ray: Any, model: str | None) -> list[str]:
    """One small task on every alive node with CPUs; a node that cannot run the batch is bad input."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    check = ray.remote(num_cpus=1, max_retries=0)(_ray_check)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
    refs = [check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(model)
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
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise


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


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


def completed_entry(video: VideoInput, output: Path, need_video: bool) -> dict[str, Any] | None:
    """The aggregate entry of a video whose outputs are complete (for --resume), else None."""
    folder = output / video.folder
    try:
        summary = _load_json(folder / SUMMARY_NAME)
        if not isinstance(summary.get("frames"), int) or _count_lines(folder / JSONL_NAME) != summary["frames"]:
            return None
    except (OSError, ValueError):
        return None
    if need_video and not (folder / VIDEO_NAME).is_file():
        return None
    entry = _entry(video, "ok", None, summary, output, resumed=True)
    entry["outputs"]["video"] = f"{video.folder}/{VIDEO_NAME}" if (folder / VIDEO_NAME).is_file() else None
    return entry


def _load_json(path: Path) -> dict[str, Any]:
    import json

    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


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
    """``realtime.files.write_bytes_atomic``, creating the folder first."""
    from . import files

    files.make_folder(path.parent)
    files.write_bytes_atomic(path, data)


def _sweep_partials(folders: list[Path]) -> None:
    """Remove this batch's temporary files (never at a final name) after an interruption."""
    for folder in folders:
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.startswith(".") and ".partial-" in p.name and p.is_file():
                    p.unlink(missing_ok=True)


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
    """Annotate every input video; returns the aggregate and the exit status (0 or 3)."""
    started = time.perf_counter()
    from .sinks import check_writable

    output = opts.output.expanduser()
    if output.exists() and not output.is_dir():
        raise UserError(f"output {output} exists and is not a folder")
    videos = collect_inputs(opts.input, output)
    check_writable(output, is_dir=True)
    if opts.report:
        from .batch_report import NO_PLOTS, can_plot

        if not can_plot():  # said before the work, not after hours of it
            log.warning("%s (report.html gets its tables only; --no-report for none)", NO_PLOTS)
    model = Path(opts.pipeline.get("model") or GENDER_MODEL)
    if opts.ray in (None, "local") and not model.is_file():  # on a cluster, each node is checked
        raise UserError(f"model not found: {model}")
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
    ray = None
    ray_start_s = None
    if tasks and opts.ray:
        t0 = time.perf_counter()
        ray = ray_init(opts.ray, opts.workers)
        try:
            nodes = ray_preflight(ray, str(opts.pipeline["model"]) if opts.pipeline.get("model") else None)
        except BaseException:
            ray.shutdown()
            raise
        log.debug("Ray nodes: %s", "; ".join(nodes))
        ray_start_s = round(time.perf_counter() - t0, 3)
        log.info("Ray %s: %s CPUs, %s in %.1f s", opts.ray, ray.cluster_resources().get("CPU", "?"),
                 "started" if opts.ray == "local" else "joined", ray_start_s)
    pool: LocalPool | None = None
    bar = None
    failed = 0
    try:
        bar = tqdm(total=sum(totals.values()) or None, unit="frame", desc=f"0/{len(tasks)} videos",
                   disable=not opts.progress or not tasks, dynamic_ncols=True)
        reported: dict[int, int] = {}

        def on_result(result: VideoResult) -> None:
            nonlocal failed
            video = videos[result.index]
            if result.status == "interrupted":
                raise KeyboardInterrupt
            if result.status == "ok":
                folder = output / video.folder
                try:
                    if result.thumbnail:
                        write_bytes_atomic(folder / THUMB_NAME, result.thumbnail)
                    write_bytes_atomic(folder / JSONL_NAME, result.jsonl)
                    write_json_atomic(folder / SUMMARY_NAME, dumps(result.summary or {}))  # last: marks it complete
                except OSError as exc:
                    raise UserError(f"cannot write the outputs of {video.rel} in {folder}: "
                                    f"{exc.strerror or exc}") from exc
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

        if ray is not None:
            run_ray(ray, tasks, opts.workers if opts.ray != "local" else None, on_result)
        elif tasks:
            pool = LocalPool(min(workers, len(tasks)))
            pool.run(tasks, on_frames, on_result)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        log.warning("interrupted: stopping the workers")
        if pool is not None:
            pool.interrupt()
        _sweep_partials([output / v.folder for v in videos])
        raise
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.close()
        if ray is not None:
            with contextlib.suppress(Exception):
                ray.shutdown()
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
    write_json_atomic(output / "summary.json", aggregate)


def _blank(value: Any) -> Any:
    return "" if value is None else value


# --- command line --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name("python -m realtime.batch"), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    p.add_argument("--input", required=True, metavar="DIR|GLOB|LIST.txt",
                   help="a folder (searched recursively), a glob pattern (quote it; ** recurses) or a text "
                        "file with one video path per line (relative to the file)")
    p.add_argument("--output", required=True, type=Path, metavar="DIR",
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
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        if args.ray:
            _import_ray()  # a missing Ray is bad input: say so before any work
        aggregate, status = run_batch(options_from_args(args))
    except UserError as exc:
        return report_user_error(exc, args.verbose)
    except KeyboardInterrupt:
        print("error: interrupted; finished videos are complete (use --resume to go on)", file=sys.stderr)
        return 130
    t = aggregate["totals"]
    log.info("%d videos, %d frames in %.1f s: %d annotated%s, %d failed; %s", t["videos"], t["frames"],
             t["seconds"], t["ok"], f" ({t['resumed']} already done)" if t["resumed"] else "", t["failed"],
             Path(args.output) / ("report.html" if not args.no_report else "summary.csv"))
    return status


if __name__ == "__main__":
    sys.exit(main())
