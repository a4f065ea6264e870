"""The age head in the runtime: smoothed apparent age per track, the child gate, JSONL and drawing."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from test_worker import ScriptedDetector

from realtime.classifier import GenderClassifier
from realtime.face import frame_record
from realtime.pipeline import FacePipeline
from realtime.sources import Frame


@pytest.fixture(scope="module")
def age_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow", reason="building the tiny test model needs TensorFlow")
    from fixtures import make_age_model

    return make_age_model(tmp_path_factory.mktemp("age_model") / "age.tflite")


def frame(level: int, index: int = 0) -> Frame:
    image = np.zeros((120, 160, 3), np.uint8)
    image[..., 0] = level  # channel 0 (blue): the tiny model's age = 80 x level / 255
    return Frame(index, index / 10.0, image, "f")


@pytest.mark.parametrize("asynchronous", [False, True])
def test_child_gate_and_apparent_age_in_jsonl(age_model: Path, asynchronous: bool) -> None:
    clf = GenderClassifier(age_model)
    pipe = FacePipeline(ScriptedDetector([[(40, 20, 60, 60)]] * 1000), clf, asynchronous=asynchronous)
    try:
        faces = []
        deadline = time.monotonic() + 20
        for i in range(1000):  # async: frames go on while the worker classifies
            faces = pipe.process(frame(20, i))  # looks about 6 years old
            if (faces and faces[0].label is not None) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        (face,) = faces
        assert face.label == "uncertain" and face.reason == "child"
        assert face.apparent_age == pytest.approx(80 * 20 / 255, abs=0.7)
        rec = frame_record(frame(20), faces)["faces"][0]
        assert rec["reason"] == "child" and rec["label"] == "uncertain"
        assert rec["apparent_age"] == round(face.apparent_age, 1)
        drawn = pipe.annotate(frame(20), faces)
        assert drawn.shape == (120, 160, 3)
    finally:
        pipe.close()


def test_adult_face_gets_its_gender_label_and_smoothed_age(age_model: Path) -> None:
    clf = GenderClassifier(age_model)
    pipe = FacePipeline(ScriptedDetector([[(40, 20, 60, 60)]] * 3), clf)
    try:
        (face,) = pipe.process(frame(200))
        assert face.reason is None and face.label == "female"
        assert face.apparent_age == pytest.approx(80 * 200 / 255, abs=0.7)
        first = face.apparent_age
        pipe.policy.every_frame = True
        (face,) = pipe.process(frame(100, 1))  # a new result is averaged into the track's age
        assert 80 * 100 / 255 < face.apparent_age < first
    finally:
        pipe.close()


def test_model_without_age_head_keeps_null_age(colour_model: Path) -> None:
    pipe = FacePipeline(ScriptedDetector([[(40, 20, 60, 60)]]), GenderClassifier(colour_model))
    try:
        (face,) = pipe.process(frame(200))
        rec = frame_record(frame(200), [face])["faces"][0]
        assert rec["apparent_age"] is None and rec["reason"] is None and rec["label"] in ("female", "male",
                                                                                          "uncertain")
    finally:
        pipe.close()
