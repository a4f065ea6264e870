"""Per-track summary of one run: who was seen, with which label, for how long.

A *track* is one face's continuous appearance as the IoU tracker follows it (:mod:`realtime.tracker`),
not an identity: nothing here recognises people. A person who leaves the picture and comes back, or
whom the detector loses for more than the tracker's ``max_misses`` frames (turning away, walking
behind someone), starts a new track and is counted again. Counts of "distinct tracks" are therefore
an upper bound on the number of different people.

:class:`TrackSummary` is fed every processed frame's :class:`~realtime.pipeline.FaceResult` list (it
is a :attr:`realtime.pipeline.Config.observer`) and builds, at the end, one record per track::

    {"track_id": 3, "label": "female", "reason": null, "p_female": 0.91, "mean_p_female": 0.88,
     "apparent_age": null, "mean_apparent_age": null, "first_seen_s": 1.25, "last_seen_s": 9.5,
     "dwell_s": 8.25, "frames_seen": 99}

- ``label``: from the track's final smoothed ``p_female`` (the tracker's running average, i.e. the
  value the last frame showed), decided by the model's own rule: ``GenderClassifier.decide`` (or
  ``label_for``): metadata threshold and uncertain band, and with an age head the child rule, which
  also sets ``reason`` to ``"child"``. A track never classified (live mode only) is ``uncertain``
  with ``p_female`` null.
- ``mean_p_female``: mean of the track's per-frame smoothed ``p_female`` (frames with a value).
- ``apparent_age``: the track's final apparent age (years) when the model has an age head (a
  ``FaceResult.apparent_age`` attribute), else null; ``mean_apparent_age`` its per-frame mean.
- ``dwell_s``: ``last_seen_s - first_seen_s`` (frame times; 0 for a face seen in one frame).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from .pipeline import FacePipeline, FaceResult
    from .sources import Frame

LABELS = ("female", "male", "uncertain")
TRACK_NOTE = ("a track is one face's continuous appearance, not an identity: a person who leaves and "
              "returns (or is lost by the detector for a moment) is counted again")
SCHEMA_VERSION = 1


@dataclass
class _TrackStats:
    track_id: int
    first_s: float
    last_s: float
    frames: int = 0
    p_last: float | None = None
    p_sum: float = 0.0
    p_n: int = 0
    age_last: float | None = None
    age_sum: float = 0.0
    age_n: int = 0
    bins: set[int] = field(default_factory=set)


class TrackSummary:
    """Collects per-track statistics frame by frame; :meth:`result` gives the summary dict."""

    def __init__(self, source: str | None = None, bin_s: float = 60.0) -> None:
        self.source = source
        self.bin_s = bin_s
        self.frames = 0
        self.first_time_s: float | None = None
        self.last_time_s: float | None = None
        self.tracks: dict[int, _TrackStats] = {}
        self.label_for: Callable[[float], str] | None = None
        self.decide: Callable[[float, float | None], tuple[str, str | None]] | None = None
        self.model: str | None = None
        self.threshold: float | None = None
        self.uncertain_band: tuple[float, float] | None = None

    # -- feeding ---------------------------------------------------------------------------
    def observe(self, frame: Frame, faces: Sequence[FaceResult], annotated: np.ndarray | None = None,
                pipeline: FacePipeline | None = None) -> None:
        """The pipeline's observer hook: one call per processed frame."""
        if pipeline is not None and self.label_for is None:
            self.bind(pipeline.classifier)
        self.add(frame.time_s, faces)

    def bind(self, classifier: Any) -> None:
        """Decide labels with this classifier's rule (``decide``, else ``label_for``); record its model."""
        self.label_for = classifier.label_for
        self.decide = getattr(classifier, "decide", None)
        info = getattr(classifier, "info", None)
        self.model = Path(str(getattr(classifier, "model_path", ""))).name or None
        if info is not None:
            self.threshold = float(info.threshold)
            self.uncertain_band = (float(info.uncertain_band[0]), float(info.uncertain_band[1]))

    def add(self, time_s: float, faces: Sequence[FaceResult]) -> None:
        self.frames += 1
        if self.first_time_s is None:
            self.first_time_s = time_s
        self.last_time_s = time_s
        bin_index = int(math.floor(time_s / self.bin_s)) if self.bin_s > 0 else 0
        for face in faces:
            t = self.tracks.get(face.track_id)
            if t is None:
                t = self.tracks[face.track_id] = _TrackStats(face.track_id, time_s, time_s)
            t.last_s = time_s
            t.frames += 1
            t.bins.add(bin_index)
            if face.p_female is not None:
                t.p_last = float(face.p_female)
                t.p_sum += float(face.p_female)
                t.p_n += 1
            age = getattr(face, "apparent_age", None)  # models with an age head only
            if age is not None:
                t.age_last = float(age)
                t.age_sum += float(age)
                t.age_n += 1

    # -- results ---------------------------------------------------------------------------
    def _label(self, p: float | None, age: float | None) -> tuple[str, str | None]:
        if p is None:
            return "uncertain", None
        if self.decide is not None:
            return self.decide(p, age)
        if self.label_for is None:
            raise RuntimeError("TrackSummary needs the classifier's label rule (bind() or observe(pipeline=...))")
        return self.label_for(p), None

    def track_records(self) -> list[dict[str, Any]]:
        out = []
        for t in sorted(self.tracks.values(), key=lambda s: s.track_id):
            label, reason = self._label(t.p_last, t.age_last)
            out.append({
                "track_id": t.track_id,
                "label": label,
                "reason": reason,
                "p_female": _round(t.p_last),
                "mean_p_female": _round(t.p_sum / t.p_n if t.p_n else None),
                "apparent_age": _round(t.age_last, 1),
                "mean_apparent_age": _round(t.age_sum / t.age_n if t.age_n else None, 1),
                "first_seen_s": round(t.first_s, 4),
                "last_seen_s": round(t.last_s, 4),
                "dwell_s": round(t.last_s - t.first_s, 4),
                "frames_seen": t.frames,
            })
        return out

    def result(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict (deterministic: no timings, no host names)."""
        tracks = self.track_records()
        counts = dict.fromkeys(LABELS, 0)
        for rec in tracks:
            counts[rec["label"]] = counts.get(rec["label"], 0) + 1
        per_bin: dict[int, dict[str, int]] = {}
        labels = {rec["track_id"]: rec["label"] for rec in tracks}
        for t in self.tracks.values():
            for b in t.bins:
                per_bin.setdefault(b, dict.fromkeys(LABELS, 0))[labels[t.track_id]] += 1
        last_bin = int(math.floor((self.last_time_s or 0.0) / self.bin_s)) if self.bin_s > 0 else 0
        timeline = [{"start_s": round(b * self.bin_s, 3), **per_bin.get(b, dict.fromkeys(LABELS, 0))}
                    for b in range(last_bin + 1)] if self.frames else []
        dwell = [rec["dwell_s"] for rec in tracks]
        return {
            "schema": SCHEMA_VERSION,
            "source": self.source,
            "model": self.model,
            "threshold": self.threshold,
            "uncertain_band": list(self.uncertain_band) if self.uncertain_band else None,
            "frames": self.frames,
            "first_time_s": None if self.first_time_s is None else round(self.first_time_s, 4),
            "last_time_s": None if self.last_time_s is None else round(self.last_time_s, 4),
            "distinct_tracks": {**counts, "total": len(tracks)},
            "dwell_s": {"mean": _round(sum(dwell) / len(dwell) if dwell else None, 3),
                        "max": _round(max(dwell) if dwell else None, 3)},
            "timeline_bin_s": self.bin_s,
            "timeline": timeline,  # distinct tracks seen in each bin, by their final label
            "note": TRACK_NOTE,
            "tracks": tracks,
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def dumps(summary: dict[str, Any]) -> str:
    """The one JSON text form of a summary (the batch driver and the CLI write the same bytes)."""
    return json.dumps(summary, indent=1, sort_keys=False) + "\n"


def write_json_atomic(path: Path, data: dict[str, Any] | str) -> None:
    """Write JSON under a temporary name in the same folder, then rename it into place."""
    from .files import make_folder, write_text_atomic

    make_folder(path.parent)
    write_text_atomic(path, data if isinstance(data, str) else dumps(data))
