"""IoU tracker with per-track smoothing of ``p_female`` and a classification cache policy.

Why not a library such as supervision or norfair: norfair 2.3 pins ``numpy<2``, which
clashes with mediapipe 1.2 / numpy 2.4; supervision 0.31 brings PyAV, SciPy, requests and PyYAML
(~100 MB, slow on a Pi) for a ByteTrack we would use a sliver of, and neither knows our cache
policy (classify a track only when it is new, grew, or its result is stale). Faces move little
between frames and are few, so greedy IoU matching is exact enough and costs microseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .detection import iou

__all__ = ["CachePolicy", "Track", "Tracker", "iou"]

Box = tuple[int, int, int, int]


@dataclass
class CachePolicy:
    """When a track needs a (new) classification."""

    every_frame: bool = False  # classify every track on every frame (no cache)
    max_age_s: float = 2.0  # re-classify results older than this
    grow_ratio: float = 1.5  # ... or when the box area grew by this factor since

    def needs(self, track: Track, now_s: float) -> bool:
        if track.pending:
            return False
        if self.every_frame or track.classified_at is None:
            return True
        if now_s - track.classified_at >= self.max_age_s:
            return True
        return track.area >= self.grow_ratio * track.classified_area


@dataclass
class Track:
    track_id: int
    box: Box
    detector_score: float
    misses: int = 0
    scores: dict[str, float] = field(default_factory=dict)  # every model output, smoothed (EMA)
    n_results: int = 0
    classified_at: float | None = None  # time of the frame of the latest result
    classified_area: int = 0
    pending: bool = False  # a classification is in flight (async mode)
    crop_box: Box | None = None

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]

    @property
    def p_female(self) -> float | None:
        """The smoothed ``p_female`` (None until the first result)."""
        return self.scores.get("p_female")


class Tracker:
    """Greedy IoU matching of detections to tracks; EMA of each track's ``p_female``."""

    def __init__(self, iou_threshold: float = 0.3, max_misses: int = 10, ema_alpha: float = 0.5) -> None:
        self.iou_threshold = iou_threshold
        self.max_misses = max_misses
        self.ema_alpha = ema_alpha
        self.tracks: dict[int, Track] = {}
        self._next_id = 1

    def update(self, boxes: Sequence[Box], scores: Sequence[float], now_s: float,
               crop_boxes: Sequence[Box] | None = None) -> list[Track]:
        """Match this frame's detections; returns one track per detection, in detection order."""
        pairs = sorted(
            ((iou(t.box, b), tid, j) for tid, t in self.tracks.items() for j, b in enumerate(boxes)),
            reverse=True,
        )
        assigned: dict[int, int] = {}  # detection index -> track id
        used: set[int] = set()
        for overlap, tid, j in pairs:
            if overlap < self.iou_threshold:
                break
            if tid in used or j in assigned:
                continue
            assigned[j] = tid
            used.add(tid)
        out = []
        for j, box in enumerate(boxes):
            crop = tuple(crop_boxes[j]) if crop_boxes is not None else tuple(box)
            if j in assigned:
                track = self.tracks[assigned[j]]
                track.box, track.detector_score, track.crop_box = tuple(box), float(scores[j]), crop
                track.misses = 0
            else:
                track = Track(self._next_id, tuple(box), float(scores[j]), crop_box=crop)
                self.tracks[track.track_id] = track
                self._next_id += 1
                used.add(track.track_id)
            out.append(track)
        for tid in list(self.tracks):
            if tid not in used:
                self.tracks[tid].misses += 1
                if self.tracks[tid].misses > self.max_misses:
                    del self.tracks[tid]
        return out

    def add_result(self, track_id: int, values: Mapping[str, float], frame_time_s: float) -> Track | None:
        """Fold a classification (every named output of the model) into the track's smoothed
        scores (None: the track is gone)."""
        track = self.tracks.get(track_id)
        if track is None:
            return None
        for name, value in values.items():
            old = track.scores.get(name)
            value = float(value)
            track.scores[name] = value if old is None else self.ema_alpha * value + (1 - self.ema_alpha) * old
        track.n_results += 1
        track.classified_at = frame_time_s
        track.classified_area = track.area
        track.pending = False
        return track

    def reset(self, restart_ids: bool = False) -> None:
        """Forget every track; ``restart_ids``: number new tracks from 1 again (unrelated pictures,
        such as the web app's uploads; a folder run keeps counting, so its ids stay distinct)."""
        self.tracks.clear()
        if restart_ids:
            self._next_id = 1
