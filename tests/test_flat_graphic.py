"""The flat-graphic rule (realtime.face_detector.flat_graphic): Chromium's fake camera (a green disc
with a turning wedge, no face) got a "male 0.84" box in the web app's webcam tab, because the
short-range model scores it up to 0.62; a low-confidence box holding a flat two-tone graphic is
dropped, a face never is (scripts/flat_graphic_check.py measures both on real data)."""

from __future__ import annotations

import cv2
import numpy as np

from realtime.detection import Detection
from realtime.face_detector import FaceDetector, flat_graphic, two_tone_share
from realtime.sources import sample_face


def wedge_picture() -> np.ndarray:
    image = np.full((480, 640, 3), (0, 128, 0), np.uint8)  # the fake camera's green ...
    cv2.ellipse(image, (380, 240), (100, 100), 0, -60, 90, (30, 255, 70), -1)  # ... and its light wedge
    return image


def test_a_two_tone_graphic_in_a_low_confidence_box_is_not_a_face() -> None:
    image = wedge_picture()
    box = (300, 130, 170, 210)
    assert two_tone_share(image[130:340, 300:470]) > 0.9
    assert flat_graphic(image, Detection(box, 0.6))
    assert not flat_graphic(image, Detection(box, 0.8))  # a confident detection is never dropped


def test_faces_are_not_flat_graphics_plain_dark_grey_or_blurred() -> None:
    face = sample_face()
    h, w = face.shape[:2]
    box = (w // 6, h // 8, 2 * w // 3, 2 * h // 3)
    variants = [face, (face * 0.25).astype(np.uint8), cv2.cvtColor(cv2.cvtColor(face, cv2.COLOR_BGR2GRAY),
                                                                   cv2.COLOR_GRAY2BGR),
                cv2.GaussianBlur(face, (0, 0), 4)]
    for image in variants:
        assert not flat_graphic(image, Detection(box, 0.55)), two_tone_share(image[box[1]:, box[0]:])


def test_the_detector_applies_the_rule_unless_told_not_to() -> None:
    image = wedge_picture()

    class Backend:  # what the short-range model answered on the fake camera: a low-score box on the wedge
        def detect(self, frame: np.ndarray, timestamp_ms: int | None = None) -> list[Detection]:
            return [Detection((300, 130, 170, 210), 0.6)]

        def close(self) -> None:
            pass

    with FaceDetector("short", drop_flat=False) as raw, FaceDetector("short") as ruled:
        raw._impl = ruled._impl = Backend()  # type: ignore[assignment]
        assert len(raw.detect(image, 0)) == 1 and ruled.detect(image, 0) == []
