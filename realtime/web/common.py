"""What every part of the web app shares: settings, errors, video formats, upload checks."""

from __future__ import annotations

import base64
import errno
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from fastapi.responses import JSONResponse

from ..config import PipelineConfig
from ..detection import Backend
from ..face import Face
from ..native import quiet_stderr
from ..overlay import caption
from ..paths import GENDER_MODEL
from ..sources import (
    IMAGE_EXTENSIONS,
    IMAGE_FORMATS,
    VIDEO_EXTENSIONS,
    ImageTooLargeError,
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


@dataclass
class Settings:
    model: Path = GENDER_MODEL
    max_upload_mb: float = 50.0  # per request; the page sends one file per request
    max_video_seconds: float = 120.0
    keep_minutes: float = 15.0  # finished video results are deleted this long after the job ends
    threads: int = 2
    detector_backend: Backend = "auto"  # where BlazeFace runs: auto | mediapipe | litert
    max_live_sessions: int = 4
    max_image_megapixels: float = 50.0  # decoded size guard (images, video frames): a small PNG can hold a huge image
    max_live_megapixels: float = 8.3  # a webcam frame: up to 3840 x 2160 (the page sends at most 640 px wide)
    allowed_hosts: frozenset[str] | None = None  # Host header names accepted (None: any)
    workdir: Path | None = None  # where the temporary job folder goes (None: the system's temp dir)

    def pipeline(self, blur: bool = False) -> PipelineConfig:
        """The pipeline options of every part of the app (uploads, webcam, video jobs): one place."""
        return PipelineConfig(model=self.model, threads=self.threads, detector_backend=self.detector_backend,
                              blur=blur)

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


def face_json(face: Face) -> dict[str, Any]:
    """One face as the JSONL record has it, plus what the page shows: confidence, caption, and
    ``pending`` while a live face waits for its first classification."""
    conf = None if face.confidence is None else round(face.confidence, 4)
    return {**face.record(), "confidence": conf, "lean": face.lean, "caption": caption(face),
            "pending": face.label is None}


def jpeg_data_url(image: np.ndarray, quality: int = 90) -> str:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise WebError(500, "could not encode the annotated image")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


