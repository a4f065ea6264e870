"""Per-track summary of one run: who was seen, with which label, for how long.

A *track* is one face's continuous appearance as the IoU tracker follows it (:mod:`realtime.tracker`),
not an identity: nothing here recognises people. A person who leaves the picture and comes back, or
whom the detector loses for more than the tracker's ``max_misses`` frames (turning away, walking
behind someone), starts a new track and is counted again. Counts of "distinct tracks" are therefore
an upper bound on the number of different people.

:class:`TrackSummary` is fed every processed frame's :class:`~realtime.face.Face` list (it
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
- ``apparent_age``: the track's final apparent age (years) when the model has an age head, else
  null; ``mean_apparent_age`` its per-frame mean. Any other output of the model (a new head) is
  summarised the same way, under its own name and ``mean_`` + its name.
- ``dwell_s``: ``last_seen_s - first_seen_s`` (frame times; 0 for a face seen in one frame).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .face import APPARENT_AGE, DECIMALS, P_FEMALE

if TYPE_CHECKING:
    import numpy as np

    from .face import Face
    from .pipeline import FacePipeline
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
    last: dict[str, float] = field(default_factory=dict)  # each output's final value
    sums: dict[str, float] = field(default_factory=dict)  # ... and its sum and count over the frames
    counts: dict[str, int] = field(default_factory=dict)
    bins: set[int] = field(default_factory=set)

    def mean(self, name: str) -> float | None:
        return self.sums[name] / self.counts[name] if self.counts.get(name) else None


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
    def observe(self, frame: Frame, faces: Sequence[Face], annotated: np.ndarray | None = None,
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

    def add(self, time_s: float, faces: Sequence[Face]) -> None:
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
            for name, value in face.outputs.items():
                t.last[name] = float(value)
                t.sums[name] = t.sums.get(name, 0.0) + float(value)
                t.counts[name] = t.counts.get(name, 0) + 1

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
            label, reason = self._label(t.last.get(P_FEMALE), t.last.get(APPARENT_AGE))
            rec: dict[str, Any] = {"track_id": t.track_id, "label": label, "reason": reason}
            for name in dict.fromkeys([P_FEMALE, APPARENT_AGE, *t.last]):
                digits = DECIMALS.get(name, 4)
                rec[name] = _round(t.last.get(name), digits)
                rec[f"mean_{name}"] = _round(t.mean(name), digits)
            out.append({
                **rec,
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
