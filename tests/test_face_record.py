"""One face record (realtime.face.Face) from the tracker to every consumer: a new attribute head
reaches the JSONL record, the track summary and the web app's JSON by its name, with no code change
in them (issue 28.3). The head here is a fake classifier's third output, ``p_smile``."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from test_worker import FakeClassifier, ScriptedDetector, frames

from realtime.face import Face, frame_record
from realtime.pipeline import FacePipeline
from realtime.summary import TrackSummary


class SmileClassifier(FakeClassifier):
    """p_female, apparent_age and a head the runtime has never heard of."""

    def predict(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        n = len(crops)
        return {"p_female": np.full(n, 0.9, np.float32), "apparent_age": np.full(n, 31.0, np.float32),
                "p_smile": np.full(n, 0.25, np.float32)}


def run_frames(n: int = 3) -> list[list[Face]]:
    pipeline = FacePipeline(ScriptedDetector([[(40, 40, 80, 80)]] * n), SmileClassifier())
    try:
        return [pipeline.process(frame) for frame in frames(n)]
    finally:
        pipeline.close()


def test_a_new_head_reaches_the_jsonl_record_by_name() -> None:
    per_frame = run_frames()
    face = per_frame[-1][0]
    assert isinstance(face, Face) and face.label == "female" and face.track_id == 1
    assert face.outputs == pytest.approx({"p_female": 0.9, "apparent_age": 31.0, "p_smile": 0.25})
    record = json.loads(json.dumps(frame_record(frames(3)[-1], per_frame[-1])))["faces"][0]
    assert list(record) == ["track_id", "box", "detector_score", "label", "p_female", "apparent_age", "p_smile",
                            "reason"]
    assert record["p_smile"] == 0.25 and record["apparent_age"] == 31.0
    private = frame_record(frames(3)[-1], per_frame[-1], privacy=True)["faces"][0]
    assert "box" not in private and private["p_smile"] == 0.25


def test_a_new_head_reaches_the_track_summary() -> None:
    summary = TrackSummary(source="x")
    summary.bind(SmileClassifier())
    for k, faces in enumerate(run_frames()):
        summary.add(k / 10, faces)
    (track,) = summary.result()["tracks"]
    assert track["p_smile"] == 0.25 and track["mean_p_smile"] == 0.25
    assert track["label"] == "female" and track["apparent_age"] == 31.0


@pytest.mark.skipif(importlib.util.find_spec("fastapi") is None, reason="the web app needs requirements-web.txt")
def test_a_new_head_reaches_the_web_apps_json() -> None:
    from realtime.web.common import face_json

    shown = face_json(run_frames()[-1][0])
    assert shown["p_smile"] == 0.25 and shown["caption"] == "female 0.90" and shown["pending"] is False


def test_a_face_waiting_for_its_first_result() -> None:
    face = Face((1, 2, 3, 4), track_id=7, detector_score=0.8)
    assert face.record() == {"track_id": 7, "box": [1, 2, 3, 4], "detector_score": 0.8, "label": "uncertain",
                             "p_female": None, "apparent_age": None, "reason": None}
    assert face.confidence is None and face.lean is None
