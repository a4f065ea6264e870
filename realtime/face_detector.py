"""FaceDetector: BlazeFace on one of two backends, chosen so that it can always start.

* ``litert``: MediaPipe's BlazeFace models on the LiteRT interpreter, with MediaPipe's pre- and
  post-processing reimplemented (:mod:`realtime.blazeface`). Runs wherever ai-edge-litert does,
  the Raspberry Pi 4 included, and is the faster one (see ``docs/detector.md``).
* ``mediapipe``: the MediaPipe Tasks ``FaceDetector``, from the ``[mediapipe]`` extra (the runtime
  does not install it). Its aarch64 wheel is compiled for ARMv8.1 atomics (LSE); on a CPU without
  them (Raspberry Pi 4, Cortex-A72) starting it kills the process with SIGILL, which cannot be
  caught, so :func:`mediapipe_support` decides before it is started.
* ``auto`` (default): ``litert``, the faster backend with measured parity (same faces, IoU >= 0.9,
  scores within 0.05 on the demo clip and still images: ``tests/test_blazeface_parity.py``).
"""

from __future__ import annotations

import importlib.util
import logging
import platform
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np

from .detection import BACKENDS, Backend, Detection, iou, to_detection
from .errors import ModelError, UserError
from .native import quiet_stderr, tensorflow_blocked
from .paths import DETECTOR_MODELS

log = logging.getLogger(__name__)

NOT_INSTALLED = "mediapipe is not installed"
# What brings the mediapipe backend: an extra of the package (requirements-mediapipe.txt in a checkout).
MEDIAPIPE_INSTALL = "pip install 'face-gender-realtime[mediapipe]'"

Mode = Literal["image", "video"]

__all__ = ["BACKENDS", "Backend", "Detection", "FaceDetector", "StillImageDetector", "mediapipe_support",
           "merge_detections", "resolve_backend", "resolve_detector_model"]


def resolve_detector_model(name_or_path: str | Path) -> Path:
    """``short``/``full`` name the bundled models; anything else is a path."""
    path = DETECTOR_MODELS.get(str(name_or_path), Path(name_or_path))
    if not path.is_file():
        raise ModelError(f"face detector model not found: {path}")
    return path


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The CPU feature flags of an Arm Linux ``/proc/cpuinfo`` (``Features`` lines), or None
    when the file cannot be read or has no such line."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    features: set[str] = set()
    found = False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "features":
            found = True
            features.update(value.split())
    return features if found else None


def mediapipe_support(machine: str | None = None, cpuinfo: Path = Path("/proc/cpuinfo")
                      ) -> tuple[bool, str]:
    """Whether MediaPipe's native face detector can start here, and if not, why.

    Decided without starting it: an illegal instruction cannot be caught."""
    try:
        spec = importlib.util.find_spec("mediapipe")
    except (ImportError, ValueError):  # an import hook that refuses it, or a broken install
        spec = None
    if spec is None:
        return False, NOT_INSTALLED
    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64") and platform.system() != "Darwin":
        features = cpu_features(cpuinfo)
        if features is not None and "atomics" not in features:
            return False, ("this Arm CPU lacks the ARMv8.1 atomics (LSE) that the mediapipe wheel is "
                           "built for (e.g. the Raspberry Pi 4's Cortex-A72); it would abort with SIGILL")
    return True, ""


_announced: set[str] = set()


def resolve_backend(requested: str = "auto", machine: str | None = None,
                    cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """``auto`` → the backend to use here; a forced ``mediapipe`` that cannot run → :class:`UserError`."""
    if requested not in BACKENDS:
        raise UserError(f"unknown detector backend {requested!r}; expected one of {', '.join(BACKENDS)}")
    if requested == "litert":
        return "litert"
    ok, why = mediapipe_support(machine, cpuinfo)
    if requested == "mediapipe":
        if why == NOT_INSTALLED:
            raise UserError(f"--detector-backend mediapipe needs MediaPipe, which is not installed: "
                            f"{MEDIAPIPE_INSTALL} (in a checkout: pip install -r requirements-mediapipe.txt), "
                            "or use --detector-backend litert (the default)")
        if not ok:
            raise UserError(f"--detector-backend mediapipe cannot run here: {why}; "
                            "use --detector-backend litert")
        return "mediapipe"
    if not ok and why not in _announced:
        _announced.add(why)
        log.info("face detector on LiteRT (%s)", why)
    return "litert"


class _Backend(Protocol):
    def detect(self, frame_bgr: np.ndarray, timestamp_ms: int | None = None) -> list[Detection]: ...

    def close(self) -> None: ...


class FaceDetector:
    """BlazeFace (``short``/``full``/PATH) on the chosen backend. Use as a context manager, or
    call :meth:`close`. Input frames are BGR uint8 (OpenCV's order).

    ``mode`` matters to MediaPipe only: ``video`` for streams (increasing timestamps), ``image``
    for independent stills; the LiteRT backend treats every frame alike.
    """

    def __init__(
        self,
        model: str | Path = "short",
        mode: Mode = "video",
        min_score: float = 0.5,
        min_suppression: float = 0.3,
        backend: Backend = "auto",
        num_threads: int | None = 2,
        drop_flat: bool = True,
    ) -> None:
        self.drop_flat = drop_flat  # drop boxes of flat two-tone graphics (flat_graphic); off: every detection
        self.model_path = resolve_detector_model(model)
        self.mode: Mode = mode
        self.min_score = min_score
        self.backend = resolve_backend(backend)
        self._impl: _Backend | None
        if self.backend == "litert":
            from .blazeface import BlazeFaceLiteRT

            self._impl = BlazeFaceLiteRT(self.model_path, min_score, min_suppression, num_threads)
        else:
            self._impl = _MediaPipeDetector(self.model_path, mode, min_score, min_suppression)

    def detect(self, frame_bgr: np.ndarray, timestamp_ms: int | None = None) -> list[Detection]:
        """Detect faces in one BGR frame, largest first. ``timestamp_ms`` orders video frames.
        Boxes that hold a flat two-tone graphic rather than a face are dropped (:func:`flat_graphic`)."""
        if self._impl is None:
            raise RuntimeError("detector is closed")
        faces = self._impl.detect(frame_bgr, timestamp_ms)
        return [d for d in faces if not flat_graphic(frame_bgr, d)] if self.drop_flat else faces

    def close(self) -> None:
        if self._impl is not None:
            self._impl.close()
            self._impl = None

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


FLAT_SHARE = 0.9  # share of a box's pixels in its two commonest tones (after contrast stretch)
FLAT_MAX_SCORE = 0.7  # only detections below this confidence can be dropped as flat graphics


def flat_graphic(frame_bgr: np.ndarray, det: Detection) -> bool:
    """Whether a low-confidence detection boxes a flat two-tone graphic, not a face.

    The short-range model scores some synthetic patterns as faces (Chromium's fake camera, a green
    disc with a turning wedge: up to 0.62 in half its frames). Such a box, contrast-stretched and
    cut into 8 grey tones, has at least 90 % of its pixels in two tones; faces (plain, masked, black
    and white, dark, blurred) stay far below. Measured by ``scripts/flat_graphic_check.py``
    (docs/measurements/flat_graphic.json); confident detections are never dropped."""
    if det.score >= FLAT_MAX_SCORE:
        return False
    x, y, w, h = det.box
    crop = frame_bgr[max(0, y):y + h, max(0, x):x + w]
    if crop.size == 0:
        return False
    return two_tone_share(crop) >= FLAT_SHARE


def two_tone_share(crop_bgr: np.ndarray) -> float:
    """Share of the pixels in the two commonest of 8 grey tones, after a 2-98 % contrast stretch
    (a 32 x 32 thumbnail: the measure of a flat graphic). Computed on the thumbnail's 256-bin
    histogram (a few microseconds: it runs on every low-confidence detection)."""
    grey = cv2.cvtColor(cv2.resize(crop_bgr, (32, 32), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    hist = np.bincount(grey.ravel(), minlength=256)
    cdf = np.cumsum(hist)
    lo, hi = (int(v) for v in np.searchsorted(cdf, (0.02 * cdf[-1], 0.98 * cdf[-1])))
    tones = np.clip((np.arange(256) - lo) * 8 // max(hi - lo, 1), 0, 7)
    counts = np.sort(np.bincount(tones, weights=hist, minlength=8))[::-1]
    return float(counts[:2].sum() / counts.sum())


class _MediaPipeDetector:
    """BlazeFace through MediaPipe Tasks (imported only when this backend is chosen)."""

    def __init__(self, model_path: Path, mode: Mode, min_score: float, min_suppression: float) -> None:
        with tensorflow_blocked():
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        self._mp = mp
        self.mode = mode
        running = vision.RunningMode.VIDEO if mode == "video" else vision.RunningMode.IMAGE
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            running_mode=running,
            min_detection_confidence=min_score,
            min_suppression_threshold=min_suppression,
        )
        try:
            with quiet_stderr():
                self._detector = vision.FaceDetector.create_from_options(options)
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"cannot load face detector {model_path}: {exc}") from exc
        self._last_ts = -1

    def detect(self, frame_bgr: np.ndarray, timestamp_ms: int | None = None) -> list[Detection]:
        mp = self._mp
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        # LiteRT prints alignment notes to fd 2 now and then, on any call: keep them off the terminal.
        with quiet_stderr():
            if self.mode == "video":
                ts = int(timestamp_ms if timestamp_ms is not None else self._last_ts + 1)
                ts = max(ts, self._last_ts + 1)  # MediaPipe needs strictly increasing timestamps
                self._last_ts = ts
                result = self._detector.detect_for_video(image, ts)
            else:
                result = self._detector.detect(image)
        height, width = frame_bgr.shape[:2]
        faces = []
        for det in result.detections:
            bb = det.bounding_box
            score = float(det.categories[0].score) if det.categories else 0.0
            kps = tuple((kp.x * width, kp.y * height) for kp in (det.keypoints or []))
            face = to_detection((bb.origin_x, bb.origin_y, bb.width, bb.height), score, kps, width, height)
            if face is not None:
                faces.append(face)
        faces.sort(key=lambda d: d.area, reverse=True)
        return faces

    def close(self) -> None:
        if self._detector is not None:
            with quiet_stderr():
                self._detector.close()
            self._detector = None


class StillImageDetector:
    """Thorough detection for independent still images (folders, uploads, datasets).

    Photos range from tight face crops to group shots, and masks lower BlazeFace's confidence.
    Both models look at the image and their faces are merged (overlaps keep the higher score):
    the short-range model is best at large frontal faces, the full-range one at small faces in a
    wide picture. When neither finds a face, both try the image padded with a black border (tight
    crops become "a face in a scene"). On real photos of masked people this finds a face in many
    more images than the short-range model alone (``tests/test_masked_detection.py``).
    """

    PAD_FRACTION = 0.5
    MERGE_IOU = 0.3

    def __init__(self, min_score: float = 0.5, models: tuple[str, str] = ("short", "full"),
                 backend: Backend = "auto", drop_flat: bool = True) -> None:
        self.short = FaceDetector(models[0], mode="image", min_score=min_score, backend=backend, drop_flat=drop_flat)
        self.full = FaceDetector(models[1], mode="image", min_score=min_score, backend=backend, drop_flat=drop_flat)
        self.backend = self.short.backend

    def detect(self, image_bgr: np.ndarray, timestamp_ms: int | None = None) -> list[Detection]:
        faces = merge_detections(self.short.detect(image_bgr) + self.full.detect(image_bgr), self.MERGE_IOU)
        if faces:
            return faces
        pad = int(round(max(image_bgr.shape[:2]) * self.PAD_FRACTION))
        padded = cv2.copyMakeBorder(image_bgr, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        height, width = image_bgr.shape[:2]
        for detector in (self.full, self.short):
            faces = detector.detect(padded)
            if faces:
                return [_unpad(f, pad, width, height) for f in faces]
        return []

    def close(self) -> None:
        self.short.close()
        self.full.close()

    def __enter__(self) -> StillImageDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merge_detections(faces: list[Detection], iou_threshold: float) -> list[Detection]:
    """Greedy non-maximum suppression across detectors; the result is in reading order (left to
    right), so tables and track IDs of a still image follow the picture."""
    kept: list[Detection] = []
    for face in sorted(faces, key=lambda f: f.score, reverse=True):
        if all(iou(face.box, k.box) < iou_threshold for k in kept):
            kept.append(face)
    return sorted(kept, key=lambda d: (d.box[0], d.box[1]))


def _unpad(face: Detection, pad: int, width: int, height: int) -> Detection | None:
    rx, ry, rw, rh = face.crop_box
    raw = (rx - pad, ry - pad, rw, rh)
    x0, y0 = max(0, raw[0]), max(0, raw[1])
    x1, y1 = min(width, raw[0] + rw), min(height, raw[1] + rh)
    kps = tuple((x - pad, y - pad) for x, y in face.keypoints)
    return Detection((x0, y0, max(1, x1 - x0), max(1, y1 - y0)), face.score, kps, raw)
