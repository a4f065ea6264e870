"""Video jobs of the web app: a queue, one video at a time, results that expire."""

from __future__ import annotations

import json
import logging
import math
import secrets
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from ..classifier import GenderClassifier
from ..errors import SourceError, UserError
from ..pipeline import Config, run
from ..sources import FrameTooLargeError, VideoFileSource, largest_jpeg_frame
from .common import (
    MAX_QUEUED_JOBS,
    Settings,
    VideoFormat,
    WebError,
    accepted_types,
    looks_like_video,
    storage_error,
)

log = logging.getLogger(__name__)

# --- videos ---------------------------------------------------------------------------------------
def public_text(text: str, job: Job) -> str:
    """A message for the page: the upload's own name instead of the server's temporary paths."""
    text = text.replace(str(job.input), job.name)
    for path, shown in ((job.output, "the labelled video"), (job.jsonl, "the faces file"), (job.folder, "the job")):
        text = text.replace(str(path), shown)
    return text.replace(str(job.folder.parent), "the server's work folder")


JobState = Literal["queued", "running", "done", "error", "deleted"]


@dataclass
class Job:
    id: str
    name: str
    folder: Path
    input: Path
    output: Path
    jsonl: Path
    fps: float
    total: int | None
    max_frames: int
    blur: bool = False  # blur the faces in the labelled video
    state: JobState = "queued"
    frames: int = 0
    error: str | None = None
    warning: str | None = None
    seconds: float | None = None
    tracks: list[dict[str, Any]] = field(default_factory=list)
    faces: int = 0
    finished_at: float | None = None
    cancelled: bool = False

    @property
    def stem(self) -> str:
        return Path(self.name).stem or "video"


class BadRecordError(ValueError):
    """A line of a job's JSONL that is not the record the pipeline writes."""


def _frame_record(line: str) -> tuple[float, list[dict[str, Any]]]:
    """``time_s`` and the faces of one JSONL line, checked: the file is read back from disk."""
    rec = json.loads(line)
    if not isinstance(rec, dict) or not isinstance(rec.get("faces"), list):
        raise BadRecordError("no faces list")
    time_s = rec.get("time_s")
    if isinstance(time_s, bool) or not isinstance(time_s, int | float):
        raise BadRecordError("no time_s")
    for face in rec["faces"]:
        if not isinstance(face, dict) or isinstance(face.get("track_id"), bool) or \
                not isinstance(face.get("track_id"), int):
            raise BadRecordError("a face without a track_id")
        p = face.get("p_female")
        if p is not None and (isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0):
            raise BadRecordError(f"p_female {p!r}")
        if p is not None and not isinstance(face.get("label"), str):
            raise BadRecordError("a face without a label")
    return time_s, rec["faces"]


def track_table(jsonl: Path) -> list[dict[str, Any]]:
    """Per track: frames seen, first/last time, and its last (smoothed) label and confidence.

    Raises :class:`BadRecordError`, naming the line, when a line is not a frame record."""
    tracks: dict[int, dict[str, Any]] = {}
    with jsonl.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            try:
                time_s, faces = _frame_record(line)
            except ValueError as exc:  # BadRecordError, JSONDecodeError, UnicodeDecodeError
                raise BadRecordError(f"line {number} of {jsonl.name} is not a frame record ({exc})") from None
            for face in faces:
                t = tracks.setdefault(face["track_id"], {"track_id": face["track_id"], "frames": 0,
                                                         "first_s": time_s, "label": None,
                                                         "p_female": None, "confidence": None})
                t["frames"] += 1
                t["last_s"] = time_s
                p = face.get("p_female")
                if p is not None:
                    t.update(label=face["label"], p_female=p, confidence=round(max(p, 1 - p), 4))
    return sorted(tracks.values(), key=lambda t: t["track_id"])


class VideoJobs:
    """Video uploads processed one at a time by :func:`realtime.pipeline.run` in a worker thread."""

    def __init__(self, settings: Settings, root: Path, fmt: VideoFormat, classifier: GenderClassifier) -> None:
        self.settings = settings
        self.classifier = classifier  # the app's one (each job builds its own detector and tracker)
        self.root = root
        self.format = fmt
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.probe_lock = threading.Lock()  # first frames are decoded one video at a time
        self.stopping = threading.Event()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="video-job")

    # -- submit --------------------------------------------------------------------------------
    def submit(self, name: str, fileobj: BinaryIO, blur: bool = False) -> Job:
        with self.lock:
            waiting = sum(j.state in ("queued", "running") for j in self.jobs.values())
        if waiting >= MAX_QUEUED_JOBS:
            raise WebError(429, f"{waiting} videos are already waiting; try {name} again when they are done")
        job_id = secrets.token_urlsafe(12)
        folder = self.root / job_id
        path = folder / f"upload{Path(name).suffix.lower()}"
        try:
            try:
                folder.mkdir()
                with path.open("wb") as fh:
                    shutil.copyfileobj(fileobj, fh, 1 << 20)
            except OSError as exc:  # disk full, read-only, permissions: one sentence, nothing left behind
                raise storage_error(name, exc) from None
            with self.probe_lock:
                fps, total = self._probe(name, path)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        limit_s = self.settings.max_video_seconds
        job = Job(job_id, name, folder, path, folder / f"labelled{self.format.suffix}",
                  folder / "faces.jsonl", fps, total, max_frames=max(1, math.ceil(limit_s * fps)), blur=blur)
        with self.lock:
            self.jobs[job_id] = job
        self.executor.submit(self._run, job)
        log.info("video job %s: %s (%s frames at %.1f fps)", job_id, name, total or "?", fps)
        return job

    def _probe(self, name: str, path: Path) -> tuple[float, int | None]:
        with path.open("rb") as fh:
            head = fh.read(64)
        if not looks_like_video(head):
            raise WebError(415, f"{name} is not a video file this app can read; "
                                f"it accepts {accepted_types()}")
        limit = self.settings.max_image_pixels
        largest = largest_jpeg_frame(path)  # MJPEG: every frame's own header, before FFmpeg decodes one
        if largest is not None and largest[0] * largest[1] > limit:
            raise WebError(413, f"{name} has a frame of {largest[0]} x {largest[1]} pixels; video frames are "
                                f"limited to {limit / 1e6:g} megapixels")
        try:
            with VideoFileSource(path, max_pixels=limit) as source:
                w, h = source.size or (0, 0)
                if w * h > limit:  # from the container's header, before a frame is decoded
                    raise WebError(413, f"{name} has frames of {w} x {h} pixels; video frames are limited "
                                        f"to {limit / 1e6:g} megapixels")
                try:
                    next(iter(source.frames()))  # decodes the first frame (checked against the limit)
                except FrameTooLargeError as exc:
                    raise WebError(413, str(exc).replace(f"video {path}", name)) from None
                fps, total = source.fps, source.total
        except (SourceError, StopIteration) as exc:
            log.debug("probe of %s failed: %s", name, exc)
            raise WebError(422, f"{name} cannot be decoded as a video: the file is corrupt, truncated "
                                "or in an unsupported format") from exc
        limit_s = self.settings.max_video_seconds
        if total and total / fps > limit_s + 0.5 / fps:
            raise WebError(413, f"{name} is {total / fps:.0f} s long; videos are limited to {limit_s:g} s")
        return fps, total

    # -- run -----------------------------------------------------------------------------------
    def _run(self, job: Job) -> None:
        try:
            self._process(job)
        except Exception as exc:  # reported to the page, never a traceback; the thread goes on
            if isinstance(exc, OSError):  # disk full, read-only, permissions: the results are gone
                message = f"the results of {job.name} could not be written on the server: " \
                          f"{exc.strerror or type(exc).__name__}"
            elif isinstance(exc, BadRecordError):
                message = f"the results of {job.name} could not be read back: {exc}"
            else:
                message = f"processing failed ({type(exc).__name__}: {exc})"
            log.error("video job %s failed: %s", job.id, message, exc_info=log.isEnabledFor(logging.DEBUG))
            job.error = job.error or public_text(message, job)
            self._remove_files(job)  # nothing half-written stays under a result's name
            job.state, job.finished_at = "error", time.monotonic()

    def _process(self, job: Job) -> None:
        if job.cancelled or self.stopping.is_set():
            self._remove_files(job)
            return
        job.state = "running"
        started = time.monotonic()
        options = {**vars(self.settings.pipeline(job.blur)), "mode": "sync"}  # a file: in-line classification
        config = Config(**options, source=str(job.input), output=job.output, jsonl=job.jsonl, display=False,
                        max_frames=job.max_frames, progress=False, contact_sheet=False,
                        video_codec=self.format.fourcc)

        def progress(done: int, total: int | None) -> bool:
            job.frames = done
            return not (job.cancelled or self.stopping.is_set())

        try:
            # Every frame is checked against the pixel limit, not only the header and the first one.
            with VideoFileSource(job.input, max_pixels=self.settings.max_image_pixels) as source:
                stats = run(config, on_frame=progress, source=source, classifier=self.classifier)
            job.frames, job.faces = stats.frames, stats.faces
            if job.total is None and stats.frames >= job.max_frames:
                job.warning = (f"only the first {self.settings.max_video_seconds:g} s were processed "
                               "(the video is longer than the limit)")
        except UserError as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, UserError) else exc
            text = public_text(str(cause), job)
            if job.output.is_file() and job.jsonl.is_file():
                job.warning = f"{text}; showing the frames before the damage"
            else:
                job.error = text
        finally:
            job.input.unlink(missing_ok=True)
            job.seconds = round(time.monotonic() - started, 2)
        if job.cancelled or self.stopping.is_set():
            self._remove_files(job)
            return
        if job.error is None:
            job.tracks = track_table(job.jsonl) if job.jsonl.is_file() else []
            job.state = "done"
            log.info("video job %s done: %d frames, %d tracks in %.1f s", job.id, job.frames,
                     len(job.tracks), job.seconds)
        else:
            log.warning("%s: %s", job.name, job.error)
            self._remove_files(job)
            job.state = "error"
        job.finished_at = time.monotonic()

    # -- look up, delete, expire ---------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None or job.state == "deleted":
            raise WebError(404, "no such video job: its results were deleted or have expired")
        return job

    def result_file(self, job_id: str, kind: str) -> Path:
        job = self.get(job_id)
        if job.state != "done":
            raise WebError(409, f"{job.name} is not finished yet")
        path = job.output if kind == "video" else job.jsonl
        if not path.is_file():
            raise WebError(404, f"the {kind} of {job.name} is gone (deleted or expired)")
        return path

    def delete(self, job_id: str) -> None:
        job = self.get(job_id)
        job.cancelled = True
        if job.state in ("done", "error"):
            self._remove_files(job)
        with self.lock:
            self.jobs.pop(job_id, None)
        log.info("video job %s deleted", job_id)

    def sweep(self, now: float | None = None) -> int:
        """Delete finished jobs older than ``keep_minutes``; returns how many."""
        now = time.monotonic() if now is None else now
        keep_s = self.settings.keep_minutes * 60
        with self.lock:
            old = [j for j in self.jobs.values()
                   if j.finished_at is not None and now - j.finished_at > keep_s]
            for job in old:
                self.jobs.pop(job.id, None)
        for job in old:
            self._remove_files(job)
            log.info("video job %s expired; its files are deleted", job.id)
        return len(old)

    def _remove_files(self, job: Job) -> None:
        shutil.rmtree(job.folder, ignore_errors=True)
        if job.state != "error":
            job.state = "deleted"

    def status(self, job: Job) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "video", "id": job.id, "name": job.name, "state": job.state,
                               "frames": job.frames, "total": min(job.total, job.max_frames) if job.total
                               else None, "error": job.error, "warning": job.warning}
        if out["total"]:
            out["progress"] = round(min(1.0, job.frames / out["total"]), 4)
        if job.state == "done":
            base = f"/api/jobs/{job.id}"
            expires = self.settings.keep_minutes * 60 - (time.monotonic() - (job.finished_at or 0))
            out.update(video_url=f"{base}/video", download_url=f"{base}/video?download=1",
                       jsonl_url=f"{base}/jsonl", playable=self.format.playable,
                       video_format=self.format.description, seconds=job.seconds, faces=job.faces,
                       tracks=job.tracks, expires_in_s=max(0, round(expires)))
        return out

    def close(self) -> None:
        self.stopping.set()
        self.executor.shutdown(wait=True, cancel_futures=True)
        with self.lock:
            jobs = list(self.jobs.values())
            self.jobs.clear()
        for job in jobs:
            self._remove_files(job)


