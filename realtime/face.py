"""The face record: what every consumer (overlay, JSONL, summary, web app, live view, contact sheet,
labelling tool) receives for one face, from the tracker (or the classifier, for a lone crop) on.

The model's named outputs (``p_female``, ``apparent_age`` and any future head listed in the model's
metadata) travel together in :attr:`Face.outputs`; the JSONL record, the web app and the summary
pass them on by name, so a new head reaches them without code here or there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sources import Frame

Box = tuple[int, int, int, int]  # x, y, width, height in pixels

P_FEMALE = "p_female"
APPARENT_AGE = "apparent_age"
UNCERTAIN = "uncertain"
CHILD = "child"  # the reason of an ``uncertain`` label given to a face that looks under the child age
DECIMALS = {APPARENT_AGE: 1}  # JSONL precision per output (default 4)


@dataclass(frozen=True)
class Face:
    """One face in one frame.

    ``label`` is ``female``, ``male`` or ``uncertain`` (``reason`` says why: ``child``), or None while
    a live face waits for its first classification; ``outputs`` are the model's named outputs,
    smoothed over the track (empty until the first result)."""

    box: Box
    label: str | None = None
    outputs: Mapping[str, float] = field(default_factory=dict)
    track_id: int | None = None
    detector_score: float | None = None
    crop_box: Box | None = None
    reason: str | None = None

    @property
    def p_female(self) -> float | None:
        return self.outputs.get(P_FEMALE)

    @property
    def apparent_age(self) -> float | None:
        return self.outputs.get(APPARENT_AGE)

    @property
    def confidence(self) -> float | None:
        """The probability of the likelier gender (of the label, unless ``uncertain``)."""
        p = self.p_female
        return None if p is None else max(p, 1.0 - p)

    @property
    def lean(self) -> str | None:
        """For a face ``uncertain`` only by the band around the threshold: the gender its probability
        points to (a child has no lean)."""
        p = self.p_female
        if self.label != UNCERTAIN or self.reason or p is None:
            return None
        return "female" if p >= 0.5 else "male"

    def record(self, privacy: bool = False) -> dict[str, Any]:
        """JSONL form (schema in the README). A face still waiting for its first result is
        ``"uncertain"`` with ``p_female: null``; ``apparent_age`` is null for models without the
        age head; other heads appear under their own names. With ``privacy`` there is no box and
        no detector score: nothing that locates a face."""
        rec: dict[str, Any] = {"track_id": self.track_id}
        if not privacy:
            rec["box"] = list(self.box)
            rec["detector_score"] = None if self.detector_score is None else round(self.detector_score, 4)
        rec["label"] = self.label or UNCERTAIN
        outputs = {P_FEMALE: None, APPARENT_AGE: None, **self.outputs}
        rec.update({name: None if value is None else round(float(value), DECIMALS.get(name, 4))
                    for name, value in outputs.items()})
        rec["reason"] = self.reason
        return rec


def frame_record(frame: Frame, faces: list[Face], privacy: bool = False) -> dict[str, Any]:
    """One JSONL line: the frame's index, time and source name, and its faces (schema in the README)."""
    return {"frame": frame.index, "time_s": round(frame.time_s, 4), "source": frame.name,
            "faces": [f.record(privacy) for f in faces]}
