"""The face detection result type and box geometry shared by every detector backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

# Where BlazeFace runs (see realtime.face_detector); defined here so CLIs can list the choices
# without importing OpenCV.
Backend = Literal["auto", "mediapipe", "litert"]
BACKENDS: tuple[str, ...] = get_args(Backend)


@dataclass(frozen=True)
class Detection:
    """One face: pixel box ``(x, y, w, h)`` clamped to the frame, score, six keypoints (px).

    ``raw_box`` is the detector's box before clamping (it may reach past the frame); crops use it
    so a face at the edge keeps its centre and scale.
    """

    box: tuple[int, int, int, int]
    score: float
    keypoints: tuple[tuple[float, float], ...] = field(default=())
    raw_box: tuple[int, int, int, int] | None = None

    @property
    def crop_box(self) -> tuple[int, int, int, int]:
        return self.raw_box or self.box

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]


def to_detection(box: Sequence[float], score: float, keypoints: tuple[tuple[float, float], ...],
                 width: int, height: int) -> Detection | None:
    """A :class:`Detection` from a float pixel box ``(x, y, w, h)`` that may reach past a
    ``width`` x ``height`` frame; None when less than 2 px of it lies inside."""
    x, y, w, h = (int(round(v)) for v in box)
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width, x + w), min(height, y + h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return Detection((x0, y0, x1 - x0, y1 - y0), float(score), keypoints, (x, y, w, h))


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0
