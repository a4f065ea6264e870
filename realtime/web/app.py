"""The web app: one FastAPI application serving a static page and a small JSON API.

Endpoints
  GET  /                      the page (static HTML/CSS/JS from ``static/``; nothing from other hosts)
  GET  /api/info              model, limits, accepted file types, label colours
  POST /api/upload            multipart field ``files`` (one or more). Images are labelled at once
                              (annotated JPEG inline + a faces table); each video becomes a job
  GET  /api/jobs/{id}         a video job's progress, then its result (track table, links)
  GET  /api/jobs/{id}/video   the annotated video (``?download=1`` for an attachment)
  GET  /api/jobs/{id}/jsonl   the per-frame JSONL (the schema of `python -m realtime --jsonl`)
  DELETE /api/jobs/{id}       delete a job's files now (``POST /api/jobs/{id}/delete`` for sendBeacon)
  WS   /api/live              webcam: the page sends JPEG frames, the server answers with faces

Every error is JSON ``{"error": "<one human sentence>"}`` with a fitting status code, and a one-line
warning in the server log. Images never touch the disk here; a video is copied into a per-job
folder under one temporary directory, its input deleted when the job ends and its results when
the user deletes them, they expire, or the server stops.

Untrusted input: an image's pixel count comes from its header before anything is decoded (only
JPEG, PNG, BMP and WebP content is decoded at all), and images are read, decoded and labelled one
at a time, so concurrent uploads queue instead of holding decoded images side by side. Requests
that change anything (POST, DELETE, WebSocket) must come from the app's own page: another
site's ``Origin`` or ``Sec-Fetch-Site`` gets 403. Every response, refusals included, carries the
security headers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import json
import logging
import math
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal
from urllib.parse import urlsplit

import cv2
import numpy as np
from fastapi import FastAPI, File, Request, UploadFile, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import SourceError, UserError
from ..native import quiet_stderr
from ..overlay import COLOURS, caption
from ..paths import GENDER_MODEL
from ..pipeline import Config, FacePipeline, FaceResult, build_pipeline, run
from ..sources import (
    IMAGE_EXTENSIONS,
    IMAGE_FORMATS,
    VIDEO_EXTENSIONS,
    Frame,
    ImageFileSource,
    ImageTooLargeError,
    Source,
    VideoFileSource,
    decode_image_limited,
    image_format,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
FORM_OVERHEAD = 64 * 1024  # multipart headers around the file bytes
MAX_FILES_PER_UPLOAD = 20
MAX_QUEUED_JOBS = 8
SWEEP_EVERY_S = 30.0
NO_STORE = {"cache-control": "no-store"}  # results never go into the browser's disk cache
SECURITY_HEADERS = [
    # Only this server: no CDN, no fonts, no analytics, no frames (see docs/web.md, privacy).
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
     b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


@dataclass
class Settings:
    model: Path = GENDER_MODEL
    max_upload_mb: float = 50.0  # per request; the page sends one file per request
    max_video_seconds: float = 120.0
    keep_minutes: float = 15.0  # finished video results are deleted this long after the job ends
    threads: int = 2
    detector_backend: str = "auto"  # auto | mediapipe | litert
    max_live_sessions: int = 4
    max_image_megapixels: float = 50.0  # decoded size guard (images, video frames): a small PNG can hold a huge image
    max_live_megapixels: float = 8.3  # a webcam frame: up to 3840 x 2160 (the page sends at most 640 px wide)
    allowed_hosts: frozenset[str] | None = None  # Host header names accepted (None: any)
    workdir: Path | None = None  # where the temporary job folder goes (None: the system's temp dir)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_image_pixels(self) -> int:
        return int(self.max_image_megapixels * 1e6)

    @property
    def max_live_pixels(self) -> int:
        return int(self.max_live_megapixels * 1e6)


class WebError(Exception):
    """A request the app refuses: ``status`` and one sentence for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str, **extra: Any) -> JSONResponse:
    log.warning("%s", message)
    return JSONResponse({"error": message, **extra}, status_code=status, headers=NO_STORE)


# --- video format --------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoFormat:
    fourcc: str
    suffix: str
    media_type: str
    description: str
    playable: bool  # plays in browsers' <video>


# OpenCV's pip wheels write VP8/VP9 WebM but not H.264 (no encoder) and mp4v does not play in
# Chromium or Firefox. VP8 encodes ~4x faster than VP9 here; mp4v is the download-only fallback.
BROWSER_FORMATS = (
    VideoFormat("VP80", ".webm", "video/webm", "WebM (VP8)", True),
    VideoFormat("VP90", ".webm", "video/webm", "WebM (VP9)", True),
)
FALLBACK_FORMAT = VideoFormat("mp4v", ".mp4", "video/mp4", "MPEG-4 Part 2 (mp4v)", False)


def pick_video_format(folder: Path) -> VideoFormat:
    """The first browser-playable format this OpenCV build can write, else mp4v."""
    frame = np.zeros((64, 64, 3), np.uint8)
    for fmt in BROWSER_FORMATS:
        probe = folder / f"codec-probe{fmt.suffix}"
        with quiet_stderr():
            writer = cv2.VideoWriter(str(probe), cv2.VideoWriter_fourcc(*fmt.fourcc), 10.0, (64, 64))
            opened = writer.isOpened()
            if opened:
                writer.write(frame)
            writer.release()
        ok = opened and probe.is_file() and probe.stat().st_size > 0
        probe.unlink(missing_ok=True)
        if ok:
            return fmt
    log.warning("this OpenCV build writes no browser-playable video (VP8/VP9): annotated videos are "
                "offered as MPEG-4 (mp4v) downloads only")
    return FALLBACK_FORMAT


# --- uploads: names, types, checks --------------------------------------------------------------
def safe_name(filename: str | None) -> str:
    """The last path component, printable, at most 100 characters ("upload" when empty)."""
    name = Path((filename or "").replace("\\", "/")).name
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '"<>|:*?')
    if len(name) > 100:
        stem, suffix = Path(name).stem, Path(name).suffix[:10]
        name = stem[: 100 - len(suffix)] + suffix
    return name or "upload"


def accepted_types() -> str:
    return "images (" + ", ".join(sorted(IMAGE_EXTENSIONS)) + ") and videos (" + \
        ", ".join(sorted(VIDEO_EXTENSIONS)) + ")"


def looks_like_video(head: bytes) -> bool:
    """Container signatures of the formats in VIDEO_EXTENSIONS.

    FFmpeg probes by content, and some inputs (HLS playlists, concat lists) make it open other
    files or URLs: only real media containers reach OpenCV.
    """
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")  # MP4 / MOV / M4V
        or head.startswith(b"\x1a\x45\xdf\xa3")  # Matroska / WebM
        or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")  # AVI
        or head.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"))  # MPEG-PS / MPEG-1/2 video
        or head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11")  # ASF / WMV
    )


def decode_upload(name: str, data: bytes, max_pixels: int) -> np.ndarray:
    """An uploaded image decoded, or the WebError that says why not (nothing decoded above the limit:
    the size comes from the header, and only JPEG, PNG, BMP and WebP content reaches the decoder)."""
    if image_format(data) is None:
        raise WebError(415, f"{name} is not a {IMAGE_FORMATS} image: its content is another format, "
                            "or not an image at all")
    try:
        image = decode_image_limited(data, max_pixels)
    except ImageTooLargeError as exc:
        raise WebError(413, f"{name} is {exc}") from None
    if image is None:
        raise WebError(422, f"{name} cannot be decoded as an image: the file is corrupt, empty or "
                            "not really an image")
    return image


def storage_error(name: str, exc: OSError) -> WebError:
    """A file the server could not write (disk full, read-only, permissions) as one sentence."""
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return WebError(507 if full else 500, f"the server could not store {name}: "
                                          f"{exc.strerror or type(exc).__name__}")


def face_json(face: FaceResult) -> dict[str, Any]:
    """One face as the JSONL record has it, plus what the page shows: confidence, caption, and
    ``pending`` while a live face waits for its first classification."""
    view = face.view()
    conf = None if view.confidence is None else round(view.confidence, 4)
    return {**face.record(), "confidence": conf, "caption": caption(view), "pending": face.label is None}


def jpeg_data_url(image: np.ndarray, quality: int = 90) -> str:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise WebError(500, "could not encode the annotated image")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


# --- images ---------------------------------------------------------------------------------------
class StillImages:
    """Label uploaded images with one still-image pipeline (models loaded once, one image at a time)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        config = Config(source="upload.jpg", model=settings.model, threads=settings.threads,
                        detector_backend=settings.detector_backend, display=False, progress=False)
        # An image source that is never opened: build_pipeline picks the still-image detector for it.
        self.pipeline: FacePipeline = build_pipeline(config, ImageFileSource(Path("upload.jpg")))
        self.lock = threading.Lock()

    def label(self, name: str, fileobj: BinaryIO, blur: bool = False) -> dict[str, Any]:
        """Read, decode, label, draw and encode one image. All of it holds the lock: one decoded
        image at a time, however many uploads arrive together (the others wait, spooled on disk).
        ``blur`` anonymises the faces in the returned picture."""
        with self.lock:
            self.pipeline.blur = blur
            image = decode_upload(name, fileobj.read(), self.settings.max_image_pixels)
            frame = Frame(0, 0.0, image, name)
            self.pipeline.new_source_item()
            faces = self.pipeline.process(frame)
            data_url = jpeg_data_url(self.pipeline.annotate(frame, faces))
            height, width = image.shape[:2]
            del frame, image  # the decoded image goes before the next upload is decoded
        record = [face_json(f) for f in faces]
        return {"kind": "image", "name": name, "width": width, "height": height, "faces": record,
                "image": data_url, "message": None if faces else "No faces found in this image."}

    def close(self) -> None:
        with self.lock:
            self.pipeline.close()


# --- videos ---------------------------------------------------------------------------------------
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

    def __init__(self, settings: Settings, root: Path, fmt: VideoFormat) -> None:
        self.settings = settings
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
        try:
            with VideoFileSource(path) as source:
                w, h = source.size or (0, 0)
                if w * h > limit:  # from the container's header, before a frame is decoded
                    raise WebError(413, f"{name} has frames of {w} x {h} pixels; video frames are limited "
                                        f"to {limit / 1e6:g} megapixels")
                first = next(iter(source.frames()))  # decodes the first frame or raises SourceError
                h, w = first.image.shape[:2]
                if w * h > limit:
                    raise WebError(413, f"{name} has frames of {w} x {h} pixels; video frames are limited "
                                        f"to {limit / 1e6:g} megapixels")
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
            job.error = job.error or message
            self._remove_files(job)  # nothing half-written stays under a result's name
            job.state, job.finished_at = "error", time.monotonic()

    def _process(self, job: Job) -> None:
        if job.cancelled or self.stopping.is_set():
            self._remove_files(job)
            return
        job.state = "running"
        started = time.monotonic()
        config = Config(source=str(job.input), output=job.output, jsonl=job.jsonl, display=False,
                        max_frames=job.max_frames, model=self.settings.model, threads=self.settings.threads,
                        detector_backend=self.settings.detector_backend, mode="sync", progress=False,
                        contact_sheet=False, video_codec=self.format.fourcc, blur=job.blur)

        def progress(done: int, total: int | None) -> bool:
            job.frames = done
            return not (job.cancelled or self.stopping.is_set())

        try:
            stats = run(config, on_frame=progress)
            job.frames, job.faces = stats.frames, stats.faces
            if job.total is None and stats.frames >= job.max_frames:
                job.warning = (f"only the first {self.settings.max_video_seconds:g} s were processed "
                               "(the video is longer than the limit)")
        except UserError as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, UserError) else exc
            text = str(cause).replace(str(job.input), job.name)
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


# --- webcam ---------------------------------------------------------------------------------------
class BrowserCamera(Source):
    """The user's webcam, frames arriving over a WebSocket. Only describes the source to
    :func:`build_pipeline` (short-range detector, video mode, background classification)."""

    live = True
    close_range = True
    kind = "camera"


class LiveSession:
    """One pipeline per WebSocket connection, so tracking and per-track smoothing work."""

    def __init__(self, settings: Settings, blur: bool = False) -> None:
        config = Config(source="browser", model=settings.model, threads=settings.threads,
                        detector_backend=settings.detector_backend, display=False,
                        progress=False, blur=blur)
        self.pipeline = build_pipeline(config, BrowserCamera("browser"))
        self.max_pixels = settings.max_live_pixels
        self.start = time.monotonic()
        self.index = 0

    def process(self, data: bytes) -> dict[str, Any]:
        """Faces in one webcam frame. Its pixels are counted from its header before it is decoded;
        each connection decodes one frame at a time, and there are at most ``max_live_sessions``."""
        t0 = time.perf_counter()
        try:
            image = decode_image_limited(data, self.max_pixels)
        except ImageTooLargeError as exc:
            return {"error": f"a webcam frame of {exc}"}
        if image is None:
            return {"error": "a webcam frame could not be decoded (send JPEG images)"}
        frame = Frame(self.index, time.monotonic() - self.start, image)
        self.index += 1
        faces = self.pipeline.process(frame)
        return {"frame": frame.index, "width": image.shape[1], "height": image.shape[0],
                "faces": [face_json(f) for f in faces], "ms": round((time.perf_counter() - t0) * 1000, 1)}

    def close(self) -> None:
        self.pipeline.close()


# --- the guard middleware -----------------------------------------------------------------------
def _hostname(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header.split("]")[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def cross_site(headers: dict[str, str]) -> str | None:
    """Why a request is from another site (None when it is from the app's own page or from no
    browser at all).

    Browsers send ``Sec-Fetch-Site`` and ``Origin`` with every cross-site POST, DELETE and
    WebSocket, and a page cannot forge either. A request with neither comes from a program
    (curl, a script), which no web page can make a user's browser send.
    """
    site = headers.get("sec-fetch-site")
    if site is not None and site.lower() not in ("same-origin", "none"):
        return f"Sec-Fetch-Site: {site}"
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or parts.netloc.lower() != headers.get("host", "").lower():
            return f"Origin: {origin}"
    return None


class Guard:
    """Host check (DNS rebinding), same-origin POST/DELETE/WebSocket (cross-site request forgery), the
    upload size limit, and the security headers on every response, refusals included."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        allowed = self.settings.allowed_hosts
        if allowed is not None and _hostname(host).lower() not in allowed:
            await self._refuse(scope, receive, send_with_headers, 400, f"refused a request for host {host!r}: "
                               "open the app at the address it printed when it started")
            return
        method = "WebSocket" if scope["type"] == "websocket" else scope["method"]
        if method == "WebSocket" or method in STATE_CHANGING:
            reason = cross_site(headers)
            if reason is not None:
                await self._refuse(scope, receive, send_with_headers, 403,
                                   f"refused a {method} {scope['path']} from another site ({reason}): "
                                   "use the app's own page")
                return
        if method == "POST" and scope["path"] == "/api/upload":
            length = headers.get("content-length", "")
            if not length.isdigit():
                await self._refuse(scope, receive, send_with_headers, 411,
                                   "uploads must state their size (Content-Length)")
                return
            if int(length) > self.settings.max_upload_bytes + FORM_OVERHEAD:
                await self._refuse(scope, receive, send_with_headers, 413,
                                   f"the upload is {int(length) / 2**20:.1f} MB; "
                                   f"uploads are limited to {self.settings.max_upload_mb:g} MB")
                return
        await self.app(scope, receive, send_with_headers)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
        if scope["type"] != "websocket":
            await error_response(status, message)(scope, receive, send)
            return
        log.warning("%s", message)
        if "websocket.http.response" in scope.get("extensions", {}):  # a real HTTP refusal, with headers
            body = json.dumps({"error": message}).encode()
            await send({"type": "websocket.http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "websocket.http.response.body", "body": body})
            return
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})


# --- the application -------------------------------------------------------------------------------
class WebState:
    """Everything the app holds: models, jobs, the temporary folder."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        try:
            self.root = Path(tempfile.mkdtemp(prefix="face-gender-web-", dir=settings.workdir))
        except OSError as exc:
            where = settings.workdir or tempfile.gettempdir()
            raise UserError(f"cannot create the app's temporary folder in {where}: "
                            f"{exc.strerror or exc}") from exc
        try:
            self.images = StillImages(settings)  # loads the models: a bad --model fails here, at start
            self.jobs = VideoJobs(settings, self.root, pick_video_format(self.root))
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        self.live_sessions = 0
        self.live_lock = threading.Lock()
        # Also removed at exit or garbage collection when the app never ran (or never shut down).
        self._remove_root = weakref.finalize(self, shutil.rmtree, str(self.root), True)

    def info(self) -> dict[str, Any]:
        clf = self.images.pipeline.classifier
        s = self.settings
        return {"model": clf.model_path.name, "input_size": clf.input_size,
                "max_upload_mb": s.max_upload_mb, "max_upload_bytes": s.max_upload_bytes,
                "max_video_seconds": s.max_video_seconds, "keep_minutes": s.keep_minutes,
                "image_extensions": sorted(IMAGE_EXTENSIONS), "video_extensions": sorted(VIDEO_EXTENSIONS),
                "video_format": self.jobs.format.description, "video_playable": self.jobs.format.playable,
                "colours": {k: "#{2:02x}{1:02x}{0:02x}".format(*v) for k, v in COLOURS.items()}}

    def handle_upload(self, upload: UploadFile, blur: bool = False) -> dict[str, Any]:
        name = safe_name(upload.filename)
        suffix = Path(name).suffix.lower()
        if suffix not in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS:
            raise WebError(415, f"{name}: this file type is not accepted; upload {accepted_types()}")
        size = upload.size if upload.size is not None else 0
        if size > self.settings.max_upload_bytes:
            raise WebError(413, f"{name} is {size / 2**20:.1f} MB; uploads are limited to "
                                f"{self.settings.max_upload_mb:g} MB")
        if size == 0:
            raise WebError(422, f"{name} is empty (0 bytes)")
        if suffix in IMAGE_EXTENSIONS:
            return self.images.label(name, upload.file, blur)
        return self.jobs.status(self.jobs.submit(name, upload.file, blur))

    def open_live(self, blur: bool = False) -> LiveSession | None:
        with self.live_lock:
            if self.live_sessions >= self.settings.max_live_sessions:
                return None
            self.live_sessions += 1
        try:
            return LiveSession(self.settings, blur)
        except BaseException:
            with self.live_lock:
                self.live_sessions -= 1
            raise

    def close_live(self, session: LiveSession) -> None:
        session.close()
        with self.live_lock:
            self.live_sessions -= 1

    def close(self) -> None:
        if not self._remove_root.alive:
            return
        self.jobs.close()
        self.images.close()
        self._remove_root()
        log.info("removed the temporary folder %s", self.root)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app, with its models loaded (raises :class:`~realtime.errors.ModelError` for a bad model)."""
    settings = settings or Settings()
    state = WebState(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def sweep_forever() -> None:
            while True:
                await asyncio.sleep(SWEEP_EVERY_S)
                state.jobs.sweep()

        sweeper = asyncio.create_task(sweep_forever())
        try:
            yield
        finally:
            sweeper.cancel()
            await asyncio.to_thread(state.close)

    app = FastAPI(title="Face gender (local)", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.web = state
    app.add_middleware(Guard, settings=settings)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(WebError)
    async def on_web_error(request: Request, exc: WebError) -> JSONResponse:
        return error_response(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, f"{message}: {request.method} {request.url.path}")

    @app.exception_handler(RequestValidationError)
    async def on_bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, "bad request: send a multipart form with the files in the field 'files'")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/api/info")
    def info() -> JSONResponse:
        return _json(state.info())

    @app.post("/api/upload")
    def upload(files: Annotated[list[UploadFile], File()], blur: bool = False) -> JSONResponse:
        if len(files) > MAX_FILES_PER_UPLOAD:
            raise WebError(400, f"{len(files)} files in one upload; send at most {MAX_FILES_PER_UPLOAD}")
        items, statuses = [], []
        for upload in files:
            try:
                items.append(state.handle_upload(upload, blur))
                statuses.append(200)
            except WebError as exc:
                log.warning("%s", exc.message)
                items.append({"name": safe_name(upload.filename), "error": exc.message})
                statuses.append(exc.status)
            except Exception as exc:  # one line in the log, a sentence in the page
                log.error("upload %s failed: %s: %s", upload.filename, type(exc).__name__, exc,
                          exc_info=log.isEnabledFor(logging.DEBUG))
                items.append({"name": safe_name(upload.filename),
                              "error": f"processing failed ({type(exc).__name__}: {exc})"})
                statuses.append(500)
        if all(s != 200 for s in statuses):  # nothing worked: the request failed, with the first reason
            return _json({"error": items[0]["error"], "items": items}, statuses[0])
        return _json({"items": items})

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str) -> JSONResponse:
        return _json(state.jobs.status(state.jobs.get(job_id)))

    @app.get("/api/jobs/{job_id}/video")
    def job_video(job_id: str, download: bool = False) -> FileResponse:
        job = state.jobs.get(job_id)
        path = state.jobs.result_file(job_id, "video")
        return FileResponse(path, media_type=state.jobs.format.media_type,
                            filename=f"{job.stem}.labelled{path.suffix}",
                            content_disposition_type="attachment" if download else "inline",
                            headers=NO_STORE)

    @app.get("/api/jobs/{job_id}/jsonl")
    def job_jsonl(job_id: str) -> FileResponse:
        job = state.jobs.get(job_id)
        path = state.jobs.result_file(job_id, "jsonl")
        return FileResponse(path, media_type="application/x-ndjson", filename=f"{job.stem}.faces.jsonl",
                            headers=NO_STORE)

    @app.delete("/api/jobs/{job_id}")
    @app.post("/api/jobs/{job_id}/delete")  # navigator.sendBeacon can only POST
    def job_delete(job_id: str) -> JSONResponse:
        state.jobs.delete(job_id)
        return _json({"deleted": job_id})

    @app.websocket("/api/live")
    async def live(ws: WebSocket) -> None:
        await ws.accept()
        blur = ws.query_params.get("blur") in ("1", "true")
        session = await asyncio.to_thread(state.open_live, blur)
        if session is None:
            await ws.send_json({"error": f"{state.settings.max_live_sessions} webcams are already connected; "
                                         "stop one and try again"})
            await ws.close(code=1013)
            return
        try:
            await _serve_live(ws, session)
        finally:
            await asyncio.to_thread(state.close_live, session)

    return app


async def _serve_live(ws: WebSocket, session: LiveSession) -> None:
    """Answer each binary (JPEG) message with the faces in it, until the page disconnects."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is None:
            await ws.send_json({"error": "send webcam frames as binary JPEG messages"})
            continue
        try:
            reply = await asyncio.to_thread(session.process, data)
        except Exception as exc:  # the page shows it; the session goes on
            log.error("webcam frame failed: %s: %s", type(exc).__name__, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            reply = {"error": f"processing failed ({type(exc).__name__}: {exc})"}
        if "error" in reply:
            log.warning("webcam: %s", reply["error"])
        await ws.send_json(reply)


def _json(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=NO_STORE)


__all__ = ["Settings", "WebError", "create_app", "pick_video_format"]
