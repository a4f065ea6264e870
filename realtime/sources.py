"""Frame sources behind one interface: context managers that yield :class:`Frame` objects.

``open_source(spec)`` understands: a camera index (``0``), ``picam`` (Raspberry Pi camera via
picamera2), ``synthetic[:faces=N,frames=M,size=WxH]`` (moving test faces), an ``http(s)://`` or
``rtsp://`` URL (reconnected with back-off when it drops), a video file, an image file or a folder
of images. Every failure to open or read becomes a :class:`SourceError` with a one-line message.
"""

from __future__ import annotations

import logging
import math
import re
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import SourceError
from .native import quiet_stderr
from .paths import SAMPLE_FACE

# OpenCV's own warnings (e.g. "can't open camera by index") become our one-line errors instead;
# FFmpeg's notes about damaged data are silenced around each native call below.
try:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
except AttributeError:  # older/other OpenCV builds
    pass

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
DEFAULT_FPS = 30.0


@dataclass
class Frame:
    """One frame. ``image`` is BGR uint8. ``detect_image`` (optional) is a smaller copy to detect
    on (picamera2's low-res stream); boxes found on it are scaled by ``image/detect_image``."""

    index: int
    time_s: float
    image: np.ndarray
    name: str | None = None
    detect_image: np.ndarray | None = None


@dataclass
class ReconnectPolicy:
    """Back-off for network streams: ``tries`` attempts, waits doubling from ``first_wait_s``."""

    tries: int = 5
    first_wait_s: float = 1.0
    max_wait_s: float = 16.0

    def waits(self) -> Iterator[float]:
        wait = self.first_wait_s
        for _ in range(self.tries):
            yield wait
            wait = min(wait * 2, self.max_wait_s)


class Source:
    """Base class. A source declares its traits, and the pipeline follows from them:

    * ``live``: runs in real time (camera, URL, picam): classification in the background;
    * ``still``: independent still images (an image, a folder): the still-image detector, a
      folder of annotated copies, tracks forgotten between images;
    * ``close_range``: faces near the camera (webcams, picam): the short-range detector and a
      mirrored window by default.

    ``kind`` is only a name for messages and reports.
    """

    live = False
    still = False
    close_range = False
    kind = "source"

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.fps: float = DEFAULT_FPS
        self.total: int | None = None  # frames, when known
        self.size: tuple[int, int] | None = None  # (width, height) when known

    def __enter__(self) -> Source:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()


# --- OpenCV-backed: camera and video file ---------------------------------------------------
class _CaptureSource(Source):
    def __init__(self, spec: str) -> None:
        super().__init__(spec)
        self.cap: cv2.VideoCapture | None = None

    def _capture(self) -> cv2.VideoCapture:
        raise NotImplementedError

    def open(self) -> None:
        with quiet_stderr():
            self.cap = self._capture()
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(self._cannot_open())
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and math.isfinite(fps) and 0 < fps < 1000 else DEFAULT_FPS
        w, h = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.size = (w, h) if w > 0 and h > 0 else None

    def _cannot_open(self) -> str:
        return f"cannot open {self.spec}"

    def read(self) -> np.ndarray | None:
        """Next frame, or None; FFmpeg's complaints about damaged data stay off the terminal."""
        assert self.cap is not None
        with quiet_stderr():
            ok, image = self.cap.read()
        return image if ok and image is not None else None

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class CameraSource(_CaptureSource):
    live = True
    close_range = True
    kind = "camera"

    def __init__(self, index: int, fail_after: int = 30, size: tuple[int, int] | None = None,
                 fps: float | None = None) -> None:
        super().__init__(str(index))
        self.index = index
        self.fail_after = fail_after
        self.want_size, self.want_fps = size, fps

    def _capture(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self.index)
        if cap.isOpened():
            if self.want_size:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.want_size[0])
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.want_size[1])
            if self.want_fps:
                cap.set(cv2.CAP_PROP_FPS, self.want_fps)
        return cap

    def open(self) -> None:
        super().open()
        if self.want_size or self.want_fps:  # cameras grant the closest mode they have: say which
            asked = " @ ".join(filter(None, (f"{self.want_size[0]}x{self.want_size[1]}" if self.want_size else "",
                                             f"{self.want_fps:g} fps" if self.want_fps else "")))
            got = f"{self.size[0]}x{self.size[1]}" if self.size else "unknown size"
            log.info("camera %d: asked for %s, got %s @ %g fps", self.index, asked, got, self.fps)

    def _cannot_open(self) -> str:
        return f"camera {self.index} cannot be opened (no such camera, or it is in use)"

    def frames(self) -> Iterator[Frame]:
        assert self.cap is not None
        start, index, misses = time.monotonic(), 0, 0
        while True:
            image = self.read()
            if image is None:
                misses += 1
                if index == 0 and misses >= 5:
                    raise SourceError(f"camera {self.index} opened but delivers no frames")
                if misses >= self.fail_after:
                    raise SourceError(f"camera {self.index} stopped delivering frames after {index} frames")
                time.sleep(0.01)
                continue
            misses = 0
            yield Frame(index, time.monotonic() - start, image)
            index += 1


# A JPEG start-of-frame segment (baseline, progressive …; 8-bit, 1 or 3 components): its height and
# width. Entropy-coded JPEG data never holds 0xFF followed by a marker byte, so in an MJPEG video
# these bytes are the frames' own headers.
_JPEG_SOF = re.compile(rb"\xff[\xc0-\xc3\xc5-\xc7\xc9-\xcb\xcd-\xcf](?:\x00\x0b\x08(.{4})\x01|\x00\x11\x08(.{4})\x03)",
                       re.DOTALL)


def largest_jpeg_frame(path: Path) -> tuple[int, int] | None:
    """The largest (width, height) among the JPEG frame headers in a file (an MJPEG video, whose
    later frames may be far larger than its container header says), without decoding anything;
    None when it holds none. OpenCV's FFmpeg backend decodes such a frame in full before scaling
    it to the header's size, so the web app checks this before a video is decoded."""
    import mmap

    best: tuple[int, int] | None = None
    try:
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            for match in _JPEG_SOF.finditer(data):
                h, w = struct.unpack(">HH", match.group(1) or match.group(2))
                if best is None or w * h > best[0] * best[1]:
                    best = (w, h)
    except (OSError, ValueError):  # an empty file cannot be mapped
        return None
    return best


class FrameTooLargeError(SourceError):
    """A decoded video frame over the pixel limit: the video stops there."""


class VideoFileSource(_CaptureSource):
    """A video file. Every decoded frame is checked against ``max_pixels`` before it goes on (the
    header and the first frame can be small while later frames are huge)."""

    kind = "video"

    def __init__(self, path: Path, max_pixels: int | None = None) -> None:
        super().__init__(str(path))
        self.path = path
        self.max_pixels = max_pixels or MAX_IMAGE_PIXELS

    def _capture(self) -> cv2.VideoCapture:
        _check_file(self.path)
        return cv2.VideoCapture(str(self.path))

    def _cannot_open(self) -> str:
        return f"cannot decode video {self.path} (corrupt or unsupported format)"

    def open(self) -> None:
        super().open()
        assert self.cap is not None
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.total = count if count > 0 else None

    def frames(self) -> Iterator[Frame]:
        assert self.cap is not None
        index = 0
        while True:
            image = self.read()
            if image is None:
                break
            h, w = image.shape[:2]
            if w * h > self.max_pixels:
                raise FrameTooLargeError(f"video {self.path} has a frame of {w} x {h} pixels (frame {index + 1}); "
                                         f"video frames are limited to {self.max_pixels / 1e6:g} megapixels")
            yield Frame(index, index / self.fps, image)
            index += 1
        if index == 0:
            raise SourceError(f"video {self.path} has no decodable frames (corrupt or empty)")
        # Container frame counts can be off by a frame or two; more than that is a cut file.
        if self.total and index < self.total - max(2, int(0.02 * self.total)):
            raise SourceError(
                f"video {self.path} ended after {index} of {self.total} frames (truncated or corrupt)"
            )


# --- network streams -------------------------------------------------------------------------
class _MjpegReader:
    """Minimal HTTP MJPEG (multipart/x-mixed-replace) reader: robust and needs no FFmpeg."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.response = urllib.request.urlopen(url, timeout=timeout_s)
        ctype = self.response.headers.get("Content-Type", "")
        if "multipart" not in ctype:
            self.response.close()
            raise ValueError(f"not an MJPEG stream (Content-Type {ctype!r})")
        self.buffer = b""

    def read(self) -> np.ndarray | None:
        while True:
            start = self.buffer.find(b"\xff\xd8")
            end = self.buffer.find(b"\xff\xd9", start + 2) if start >= 0 else -1
            if start >= 0 and end >= 0:
                jpeg, self.buffer = self.buffer[start : end + 2], self.buffer[end + 2 :]
                image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                if image is not None:
                    return image
                continue
            chunk = self.response.read1(65536) if hasattr(self.response, "read1") else self.response.read(65536)
            if not chunk:
                return None
            self.buffer += chunk
            if len(self.buffer) > 32 << 20:  # no frame boundary in 32 MB: not MJPEG
                return None

    def close(self) -> None:
        self.response.close()


class StreamSource(Source):
    """``http(s)://`` MJPEG (own reader) or any URL OpenCV/FFmpeg opens (``rtsp://`` …).

    When the stream drops, it is reopened with back-off; after ``policy.tries`` failed attempts
    the source gives up with a :class:`SourceError`.
    """

    live = True
    kind = "stream"

    def __init__(self, url: str, policy: ReconnectPolicy | None = None, timeout_s: float = 10.0) -> None:
        super().__init__(url)
        self.url = url
        self.policy = policy or ReconnectPolicy()
        self.timeout_s = timeout_s
        self._reader: _MjpegReader | cv2.VideoCapture | None = None

    def _connect(self) -> _MjpegReader | cv2.VideoCapture:
        if self.url.startswith(("http://", "https://")):
            try:
                return _MjpegReader(self.url, self.timeout_s)
            except ValueError:
                pass  # not MJPEG: let FFmpeg try (HLS, progressive mp4 …)
            except (urllib.error.URLError, OSError) as exc:
                raise ConnectionError(str(getattr(exc, "reason", exc))) from exc
        with quiet_stderr():
            cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise ConnectionError("cannot open stream")
        return cap

    def _read(self) -> np.ndarray | None:
        reader = self._reader
        try:
            if isinstance(reader, _MjpegReader):
                return reader.read()
            if reader is not None:
                with quiet_stderr():
                    ok, image = reader.read()
                return image if ok else None
        except (OSError, urllib.error.URLError, ValueError):
            return None
        return None

    def _close_reader(self) -> None:
        if self._reader is not None:
            try:
                if isinstance(self._reader, _MjpegReader):
                    self._reader.close()
                else:
                    self._reader.release()
            except OSError:
                pass
            self._reader = None

    def open(self) -> None:
        try:
            self._reader = self._connect()
        except ConnectionError as exc:
            raise SourceError(f"cannot open stream {self.url}: {exc}") from exc

    def _reconnect(self) -> bool:
        self._close_reader()
        for attempt, wait in enumerate(self.policy.waits(), start=1):
            log.warning("stream %s dropped; reconnecting in %.1f s (try %d/%d)", self.url, wait,
                        attempt, self.policy.tries)
            time.sleep(wait)
            try:
                self._reader = self._connect()
            except ConnectionError:
                continue
            log.info("reconnected to %s", self.url)
            return True
        return False

    def close(self) -> None:
        self._close_reader()

    def frames(self) -> Iterator[Frame]:
        start, index = time.monotonic(), 0
        while True:
            image = self._read()
            if image is None:
                if not self._reconnect():
                    raise SourceError(f"stream {self.url} dropped and did not come back after "
                                      f"{self.policy.tries} tries")
                continue
            yield Frame(index, time.monotonic() - start, image)
            index += 1


# --- images ----------------------------------------------------------------------------------
def read_image(path: Path) -> np.ndarray | None:
    """Decode an image file to BGR, or None when it is empty, unreadable, not an image, or larger
    than the runtime's pixel limit (logged: a 1 MB PNG can hold 400 megapixels, gigabytes decoded)."""
    try:
        return read_image_limited(path)
    except ImageTooLargeError as exc:
        log.warning("skipping %s: %s", path, exc)
        return None


def decode_image(data: bytes | np.ndarray) -> np.ndarray | None:
    """Decode encoded image bytes (JPEG, PNG …) to BGR, or None when they are not an image."""
    buf = np.frombuffer(data, np.uint8) if isinstance(data, bytes | bytearray | memoryview) else data
    if buf.size == 0:
        return None
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return image if image is not None and image.size else None


# Decoded-size guard: a few kB of PNG or JPEG can hold a gigapixel image (gigabytes once decoded).
# The size comes from the image's own header, read here for the formats the app accepts, before
# OpenCV decodes anything; content in any other format (HDR, PFM, PNM, Sun raster, TIFF, JPEG 2000,
# GIF, AVIF ... which OpenCV would also decode, whatever the file's extension) is never decoded.
MAX_IMAGE_PIXELS = 50_000_000
IMAGE_FORMATS = "JPEG, PNG, BMP or WebP"
_JPEG_SEGMENTS = frozenset({*range(0xC0, 0xD0), 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, *range(0xE0, 0xF0),
                            *range(0xF0, 0xFE), 0xFE})  # markers with a length: SOFn/DHT/DAC, DQT ... APPn, COM
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0 ... SOF15


class ImageTooLargeError(ValueError):
    """An image whose header says it has more pixels than allowed (nothing was decoded)."""

    def __init__(self, width: int, height: int, max_pixels: int) -> None:
        super().__init__(f"{width} x {height} pixels; images are limited to {max_pixels / 1e6:g} megapixels")
        self.width, self.height, self.max_pixels = width, height, max_pixels


def image_format(data: bytes | np.ndarray) -> str | None:
    """``jpeg``, ``png``, ``bmp`` or ``webp`` from the signature OpenCV also goes by; None otherwise."""
    head = bytes(data[:16])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    return None


def image_size(data: bytes | np.ndarray) -> tuple[int, int] | None:
    """``(width, height)`` from the header of a JPEG, PNG, BMP or WebP image, without decoding it.

    None for any other format and for a header that cannot be read the way the decoder reads it
    (callers treat that as "not an image": nothing is decoded that was not measured first).
    """
    fmt = image_format(data)
    b = bytes(data[:32]) if fmt != "jpeg" else bytes(data)
    try:
        if fmt == "png" and b[12:16] == b"IHDR":
            return int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")
        if fmt == "bmp":  # OpenCV's BMP decoder: BITMAPINFOHEADER and later (>= 36 bytes), or OS/2 (12)
            size = int.from_bytes(b[14:18], "little")
            if size >= 36 and len(b) >= 26:
                w, h = (int.from_bytes(b[i : i + 4], "little", signed=True) for i in (18, 22))
                return abs(w), abs(h)
            if size == 12 and len(b) >= 22:
                return int.from_bytes(b[18:20], "little"), int.from_bytes(b[20:22], "little")
            return None
        if fmt == "webp":
            chunk = b[12:16]
            if chunk == b"VP8 " and b[23:26] == b"\x9d\x01\x2a":
                return (int.from_bytes(b[26:28], "little") & 0x3FFF, int.from_bytes(b[28:30], "little") & 0x3FFF)
            if chunk == b"VP8L" and b[20] == 0x2F:
                bits = int.from_bytes(b[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8X":
                return int.from_bytes(b[24:27], "little") + 1, int.from_bytes(b[27:30], "little") + 1
            return None
        if fmt == "jpeg":
            return _jpeg_size(b)
    except IndexError:
        return None
    return None


def _jpeg_size(b: bytes) -> tuple[int, int] | None:
    """The first frame header (SOFn), walking the marker segments as libjpeg does; None on anything
    unexpected (libjpeg would skip stray bytes and might find another frame header)."""
    i, n = 2, len(b)
    while i < n:
        if b[i] != 0xFF:
            return None
        while i < n and b[i] == 0xFF:  # fill bytes
            i += 1
        if i + 3 > n:
            return None
        marker = b[i]
        if marker not in _JPEG_SEGMENTS:  # SOS or EOI before a frame header, RSTn, SOI, reserved
            return None
        length = int.from_bytes(b[i + 1 : i + 3], "big")
        if length < 2:
            return None
        if marker in _JPEG_FRAMES:
            if i + 8 > n:
                return None
            return int.from_bytes(b[i + 6 : i + 8], "big"), int.from_bytes(b[i + 4 : i + 6], "big")
        i += 1 + length
    return None


def decode_image_limited(data: bytes | np.ndarray, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray | None:
    """:func:`decode_image` for untrusted bytes: only JPEG, PNG, BMP and WebP content, measured from
    its header first. Raises :class:`ImageTooLargeError` (before decoding) above ``max_pixels``; None when
    the bytes are not one of those formats or do not decode."""
    buf = np.frombuffer(data, np.uint8) if isinstance(data, bytes | bytearray | memoryview) else data
    size = image_size(buf)
    if size is None:
        return None
    if size[0] * size[1] > max_pixels:
        raise ImageTooLargeError(size[0], size[1], max_pixels)
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error:  # e.g. OPENCV_IO_MAX_IMAGE_PIXELS, where a process sets it
        return None
    if image is None or not image.size:
        return None
    if image.shape[0] * image.shape[1] > max_pixels:  # cannot happen when the header told the truth
        raise ImageTooLargeError(image.shape[1], image.shape[0], max_pixels)
    return image


def read_image_limited(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray | None:
    """:func:`decode_image_limited` of a file (None when it cannot be read)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    return decode_image_limited(data, max_pixels)


class ImageFileSource(Source):
    kind = "image"
    still = True

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path
        self.total = 1

    def open(self) -> None:
        _check_file(self.path)

    def frames(self) -> Iterator[Frame]:
        try:
            image = read_image_limited(self.path)
        except ImageTooLargeError as exc:
            raise SourceError(f"image {self.path} is {exc}") from exc
        if image is None:
            raise SourceError(f"cannot read image {self.path} (corrupt or not an image)")
        yield Frame(0, 0.0, image, self.path.name)


class ImageFolderSource(Source):
    """Every image in a folder (recursively, sorted); unreadable files are skipped with a warning."""

    kind = "folder"
    still = True

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path
        self.files: list[Path] = []
        self.skipped: list[str] = []

    def open(self) -> None:
        if not self.path.is_dir():
            raise SourceError(f"folder not found: {self.path}")
        self.files = sorted(p for p in self.path.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.files:
            raise SourceError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {self.path}")
        self.total = len(self.files)

    def frames(self) -> Iterator[Frame]:
        index = 0
        for path in self.files:
            rel = path.relative_to(self.path).as_posix()
            try:
                image = read_image_limited(path)
            except ImageTooLargeError as exc:
                log.warning("skipping %s: %s", rel, exc)
                self.skipped.append(rel)
                continue
            if image is None:
                log.warning("skipping %s: unreadable or not an image", rel)
                self.skipped.append(rel)
                continue
            yield Frame(index, float(index), image, rel)
            index += 1


# --- Raspberry Pi camera ---------------------------------------------------------------------
PICAMERA2_HELP = (
    "picamera2 is not available: on Raspberry Pi OS run `sudo apt install -y python3-picamera2` and "
    "use a venv made with --system-site-packages (scripts/setup_pi.sh does both)"
)


class PicameraSource(Source):
    """Pi camera via picamera2: ``main`` stream (RGB888) for display, ``lores`` for detection."""

    live = True
    close_range = True
    kind = "picam"

    def __init__(self, main_size: tuple[int, int] = (1280, 720), lores_size: tuple[int, int] = (640, 360)):
        super().__init__("picam")
        self.main_size, self.lores_size = main_size, lores_size
        self.size = main_size
        self._cam = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]
        except ImportError as exc:
            raise SourceError(PICAMERA2_HELP) from exc
        try:
            cam = Picamera2()
            config = cam.create_video_configuration(
                main={"size": self.main_size, "format": "RGB888"},
                lores={"size": self.lores_size, "format": "YUV420"},
            )
            cam.configure(config)
            cam.start()
        except Exception as exc:
            raise SourceError(f"cannot start the Pi camera: {exc}") from exc
        self._cam = cam

    def close(self) -> None:
        if self._cam is not None:
            self._cam.stop()
            self._cam.close()
            self._cam = None

    def frames(self) -> Iterator[Frame]:
        start, index = time.monotonic(), 0
        while True:
            try:
                main = self._cam.capture_array("main")  # RGB888 in picamera2 is BGR in memory
                lores = self._cam.capture_array("lores")
            except Exception as exc:
                raise SourceError(f"the Pi camera stopped: {exc}") from exc
            lores_bgr = cv2.cvtColor(lores, cv2.COLOR_YUV420p2BGR)
            yield Frame(index, time.monotonic() - start, main, detect_image=lores_bgr)
            index += 1


# --- synthetic -------------------------------------------------------------------------------
def sample_face() -> np.ndarray:
    """A real face photo that ships with the package (Grace Hopper, public domain), BGR."""
    image = cv2.imread(str(SAMPLE_FACE))
    if image is None:
        raise SourceError(f"cannot read the sample face {SAMPLE_FACE}")
    return image


class SyntheticSource(Source):
    """Faces gliding over a plain background: deterministic frames for tests and benchmarks."""

    kind = "synthetic"

    def __init__(self, faces: int = 1, frames: int = 300, size: tuple[int, int] = (640, 480),
                 fps: float = 30.0, face_px: int = 160) -> None:
        super().__init__(f"synthetic:faces={faces},frames={frames}")
        self.n_faces, self.total, self.size, self.fps = faces, frames, size, fps
        self.face_px = face_px
        self._face: np.ndarray | None = None

    def open(self) -> None:
        face = sample_face()
        # Head-and-shoulders square around the face of the sample photo.
        self._face = cv2.resize(face[60:572, 0:512], (self.face_px, self.face_px), interpolation=cv2.INTER_AREA)

    def frames(self) -> Iterator[Frame]:
        assert self._face is not None and self.total is not None
        w, h = self.size
        f = self.face_px
        for index in range(self.total):
            image = np.full((h, w, 3), (60, 70, 80), np.uint8)
            for k in range(self.n_faces):
                phase = index / max(1, self.total) * 2 * math.pi + k * 2.1
                x = int((w - f) * (0.5 + 0.4 * math.sin(phase + k)) * (k + 1) / self.n_faces
                        - (w - f) * k / (2 * self.n_faces))
                x = min(max(0, x), w - f)
                y = int((h - f) * (0.5 + 0.3 * math.cos(phase * 0.7 + k)))
                image[y : y + f, x : x + f] = self._face
            yield Frame(index, index / self.fps, image)


SYNTHETIC_KEYS = ("faces", "frames", "size", "fps")
SYNTHETIC_MIN_SIDE = 32
SYNTHETIC_MAX_FACES = 32


def parse_synthetic(spec: str) -> SyntheticSource:
    opts: dict[str, str] = {}
    _, _, rest = spec.partition(":")
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        opts[key.strip()] = value.strip()
    unknown = sorted(set(opts) - set(SYNTHETIC_KEYS))
    if unknown:
        raise SourceError(f"bad synthetic source {spec!r}: unknown key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(SYNTHETIC_KEYS)}")
    example = "e.g. synthetic:faces=2,frames=300,size=640x480,fps=30"
    try:
        size = tuple(int(v) for v in opts.get("size", "640x480").lower().split("x"))
        if len(size) != 2:
            raise ValueError("size")
        faces, frames, fps = int(opts.get("faces", 1)), int(opts.get("frames", 300)), float(opts.get("fps", 30))
    except ValueError as exc:
        raise SourceError(f"bad synthetic source {spec!r}; {example}") from exc
    w, h = size
    if not (w >= SYNTHETIC_MIN_SIDE and h >= SYNTHETIC_MIN_SIDE and w * h <= MAX_IMAGE_PIXELS):
        raise SourceError(f"bad synthetic source {spec!r}: size must be at least {SYNTHETIC_MIN_SIDE}x"
                          f"{SYNTHETIC_MIN_SIDE} and at most {MAX_IMAGE_PIXELS / 1e6:g} megapixels; {example}")
    if not 0 <= faces <= SYNTHETIC_MAX_FACES:
        raise SourceError(f"bad synthetic source {spec!r}: faces must be 0 to {SYNTHETIC_MAX_FACES}; {example}")
    if frames < 1:
        raise SourceError(f"bad synthetic source {spec!r}: frames must be at least 1; {example}")
    if not (math.isfinite(fps) and 0 < fps <= 1000):
        raise SourceError(f"bad synthetic source {spec!r}: fps must be above 0 and at most 1000; {example}")
    return SyntheticSource(faces, frames, (w, h), fps, face_px=min(160, min(w, h) // 2))


# --- dispatch --------------------------------------------------------------------------------
def _check_file(path: Path) -> None:
    if not path.exists():
        raise SourceError(f"no such file or folder: {path}")
    if not path.is_file():
        raise SourceError(f"not a file: {path}")
    if path.stat().st_size == 0:
        raise SourceError(f"file is empty (0 bytes): {path}")


def open_source(spec: str, reconnect: ReconnectPolicy | None = None, camera_size: tuple[int, int] | None = None,
                camera_fps: float | None = None) -> Source:
    """Pick the source for ``spec`` (not yet opened: use it as a context manager)."""
    spec = spec.strip()
    if not spec:
        raise SourceError("--source is empty")
    if spec.isdigit():
        return CameraSource(int(spec), size=camera_size, fps=camera_fps)
    if spec == "picam":
        return PicameraSource()
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return parse_synthetic(spec)
    if "://" in spec:
        if not spec.startswith(("http://", "https://", "rtsp://", "rtsps://", "rtmp://", "udp://", "tcp://")):
            raise SourceError(f"unsupported URL scheme: {spec}")
        return StreamSource(spec, reconnect)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ImageFolderSource(path)
    if not path.exists():
        raise SourceError(f"no such file or folder: {path}")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return ImageFileSource(path)
    return VideoFileSource(path)




# --- cameras ---------------------------------------------------------------------------------------
PROBE_MODES = ((320, 240), (640, 480), (1280, 720), (1920, 1080))


def list_cameras(max_index: int = 10) -> list[dict]:
    """Cameras that open and deliver a frame, with the modes each grants (asked mode -> got)."""
    found = []
    for index in range(max_index):
        with quiet_stderr():
            cap = cv2.VideoCapture(index)
        try:
            if not cap.isOpened():
                continue
            ok, _ = cap.read()
            if not ok:
                continue
            default = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            modes = set()
            for w, h in PROBE_MODES:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, w)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, h)
                modes.add((int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                           round(float(cap.get(cv2.CAP_PROP_FPS) or 0), 1)))
            found.append({"index": index, "default": default, "modes": sorted(modes)})
        finally:
            cap.release()
    return found


def read_video_frames(path: Path, limit: int | None = None) -> list[np.ndarray]:
    """Every frame of a (short) video file in memory; :class:`SourceError` when it has none."""
    with quiet_stderr():
        cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    try:
        while limit is None or len(frames) < limit:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise SourceError(f"no frames in {path}")
    return frames
