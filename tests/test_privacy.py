"""Face blurring: what it removes, measured on real faces from the demo clip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from realtime.crop import crop_face
from realtime.face_detector import FaceDetector
from realtime.paths import DEMO_CLIP
from realtime.privacy import blur_faces, face_region
from realtime.sources import read_video_frames

SIDE = 96


def hog_embedding(face_bgr: np.ndarray) -> np.ndarray:
    """A simple face descriptor: HOG of the 96 x 96 gray crop, L2-normalised."""
    gray = cv2.cvtColor(cv2.resize(face_bgr, (SIDE, SIDE), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    hog = cv2.HOGDescriptor((SIDE, SIDE), (16, 16), (8, 8), (8, 8), 9)
    v = hog.compute(gray).reshape(-1).astype(np.float64)
    return v / (np.linalg.norm(v) + 1e-12)


def laplacian_variance(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


@pytest.fixture(scope="module")
def demo_faces() -> list[tuple[int, np.ndarray, tuple[int, int, int, int]]]:
    """(frame index, frame, box) of every face the detector finds in frames 20 and 40."""
    frames = read_video_frames(DEMO_CLIP)
    out = []
    with FaceDetector("full", mode="image") as det:
        for i in (20, 40):
            out += [(i, frames[i], face.box) for face in det.detect(frames[i])]
    assert len(out) >= 6
    return out


def test_blur_removes_fine_detail(demo_faces) -> None:
    for _, frame, box in demo_faces:
        blurred = blur_faces(frame, [box])
        x, y, w, h = box  # the face at its own resolution
        before = laplacian_variance(frame[y:y + h, x:x + w])
        after = laplacian_variance(blurred[y:y + h, x:x + w])
        assert after <= 0.1 * before, (box, before, after)


def test_blurred_face_no_longer_matches_its_original(demo_faces) -> None:
    """Same person in two frames (matched by position order) vs a blurred copy of one of them."""
    by_frame: dict[int, list] = {}
    for i, frame, box in demo_faces:
        by_frame.setdefault(i, []).append((box[0], frame, box))
    a = [crop_face(f, b, SIDE, 0.2) for _, f, b in sorted(by_frame[20], key=lambda t: t[0])]
    b = [crop_face(f, bx, SIDE, 0.2) for _, f, bx in sorted(by_frame[40], key=lambda t: t[0])]
    assert len(a) == len(b) == 3
    emb_a, emb_b = [hog_embedding(x) for x in a], [hog_embedding(x) for x in b]
    same = [float(emb_a[k] @ emb_b[k]) for k in range(3)]
    others = [float(emb_a[j] @ emb_b[k]) for j in range(3) for k in range(3) if j != k]
    threshold = (min(same) + max(others)) / 2
    assert min(same) > max(others), "the check must tell people apart first"
    for _, frame, box in by_frame[20]:
        original = hog_embedding(crop_face(frame, box, SIDE, 0.2))
        blurred = hog_embedding(crop_face(blur_faces(frame, [box]), box, SIDE, 0.2))
        assert float(original @ blurred) < threshold


def test_blur_copies_clips_and_skips_degenerate_boxes() -> None:
    image = np.random.default_rng(0).integers(0, 255, (100, 120, 3), dtype=np.uint8)
    out = blur_faces(image, [(-20, -20, 60, 60), (110, 90, 40, 40), (5, 5, 0, 10)])
    assert out is not image and out.shape == image.shape
    assert not np.array_equal(out[:40, :40], image[:40, :40])  # the corner face, clipped to the frame
    assert np.array_equal(out[60:80, 50:80], image[60:80, 50:80])  # no face there: untouched
    assert face_region((5, 5, 0, 10), 120, 100) is None
    same = image.copy()
    blur_faces(same, [(10, 10, 40, 40)], inplace=True)
    assert not np.array_equal(same, image)
