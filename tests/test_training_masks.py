"""Synthetic masks sit on the lower face: below the eyes, over mouth and chin (real face-mesh points)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from fixtures import SHARED_DIR

from realtime.crop import crop_face
from realtime.face_detector import FaceDetector
from training.landmarks import CHIN, EYES, LANDMARK_MARGIN, FaceLandmarks, rescale_points
from training.masks import TEMPLATE_ANCHORS, Template, add_mask, draw_mask, load_templates

SHARED_TEMPLATES = SHARED_DIR / "data" / "mask_templates"
SIZE = 128
MARGIN = 0.1
MOUTH = (13, 14)  # inner upper and lower lip
LOWER_LIDS = (145, 374)
OUTER_EYE_CORNERS = (33, 263)


@pytest.fixture(scope="module")
def face(face_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo's face crop (BGR, SIZE px) and its 468 mesh points normalised to the crop."""
    with FaceDetector("short", mode="image") as detector:
        faces = detector.detect(face_image)
    assert faces, "the short-range detector should find the sample face"
    box = faces[0].crop_box
    mesh, flag = FaceLandmarks()(face_image, box)
    assert flag > 0, "the face mesh should be confident on the sample face"
    return crop_face(face_image, box, SIZE, MARGIN), rescale_points(mesh, LANDMARK_MARGIN, MARGIN)


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.abs(after.astype(np.int16) - before.astype(np.int16)).max(axis=2) > 0


def window(mask: np.ndarray, point: np.ndarray, radius: int) -> np.ndarray:
    x, y = (round(v) for v in point)
    return mask[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]


def assert_lower_face_masked(crop: np.ndarray, masked: np.ndarray, points: np.ndarray,
                             above_share: float = 0.0, chin_share: float = 0.75) -> None:
    """Eyes untouched, (almost) nothing above the lower eyelids, mouth and chin covered."""
    diff = changed(crop, masked)
    px = points * SIZE
    for index in EYES:
        assert not window(diff, px[index], 1).any(), f"mask reaches eye landmark {index}"
    # Above the lower eyelids, between the outer eye corners.
    top = int(np.floor(min(px[i][1] for i in LOWER_LIDS))) - 1
    left, right = sorted(round(px[i][0]) for i in OUTER_EYE_CORNERS)
    assert diff[:top, left:right].mean() <= above_share, "mask reaches above the eyes"
    for index in MOUTH:
        assert window(diff, px[index], 4).mean() > 0.9, "mouth not covered"
    above_chin = px[CHIN] - (0, 0.04 * SIZE)
    assert window(diff, above_chin, 3).mean() >= chin_share, "chin not covered"


def test_landmarks_are_in_face_order(face: tuple[np.ndarray, np.ndarray]) -> None:
    _, points = face
    eyes_y = points[list(EYES), 1].mean()
    assert eyes_y < points[list(MOUTH), 1].mean() < points[CHIN, 1]
    assert np.all((points > -0.1) & (points < 1.1))


@pytest.mark.parametrize("seed", range(12))
def test_drawn_mask_covers_lower_face_only(face: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    crop, points = face
    masked = draw_mask(crop, points, np.random.default_rng(seed))
    assert masked.shape == crop.shape and masked.dtype == np.uint8
    assert_lower_face_masked(crop, masked, points)


def hexagon_template(points: np.ndarray) -> Template:
    """A green hexagon template whose anchors a..f have this face's layout (scaled, shifted)."""
    anchors = np.array([points[TEMPLATE_ANCHORS[k]] for k in "abcdef"], np.float32) * 150 + 20
    rgba = np.zeros((200, 200, 4), np.uint8)
    outline = anchors[[0, 1, 2, 5, 4, 3]].round().astype(np.int32)  # a b c f e d: round the edge
    cv2.fillPoly(rgba, [outline], (0, 200, 0, 255))
    return Template("hexagon", rgba, anchors)


def test_template_mask_covers_lower_face_only(face: tuple[np.ndarray, np.ndarray]) -> None:
    crop, points = face
    template = hexagon_template(points)
    for seed in range(4):
        masked = add_mask(crop, points, np.random.default_rng(seed), [template], template_share=1.0)
        assert_lower_face_masked(crop, masked, points)


@pytest.mark.shared
def test_maskthefaces_templates_cover_lower_face_only(face: tuple[np.ndarray, np.ndarray]) -> None:
    crop, points = face
    templates = load_templates(SHARED_TEMPLATES)
    assert templates, f"no templates read from {SHARED_TEMPLATES}"
    for k, template in enumerate(templates):
        masked = add_mask(crop, points, np.random.default_rng(k), [template], template_share=1.0)
        # Real masks: N95 edges may touch the nose bridge, surgical masks end above the chin.
        assert_lower_face_masked(crop, masked, points, above_share=0.01, chin_share=0.5)


def test_add_mask_without_landmarks_returns_the_crop(face: tuple[np.ndarray, np.ndarray]) -> None:
    crop, points = face
    missing = np.full_like(points, np.nan)
    assert add_mask(crop, missing, np.random.default_rng(0)) is crop
    assert add_mask(crop, None, np.random.default_rng(0)) is crop  # type: ignore[arg-type]
