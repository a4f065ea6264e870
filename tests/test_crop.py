"""realtime.crop: the one face-crop definition shared by training and runtime."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.crop import crop_face, largest_box, resize_square, square_box


def test_square_box_is_centred_with_margin() -> None:
    x0, y0, side = square_box((100, 50, 40, 80), margin=0.25)
    assert side == 100  # max(40, 80) * 1.25
    assert (x0 + side / 2, y0 + side / 2) == (120, 90)  # the box centre


def test_square_box_rejects_empty_boxes() -> None:
    with pytest.raises(ValueError):
        square_box((0, 0, 0, 10))


def test_crop_inside_frame_matches_slice() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    crop = crop_face(image, (100, 60, 50, 50), size=50, margin=0.0)
    np.testing.assert_array_equal(crop, image[60:110, 100:150])


def test_crop_outside_frame_repeats_the_edge_and_keeps_centre() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    image[0, :] = 50  # top row
    image[:, 0] = 80  # left column (and the corner)
    image[5:, 5:] = 200
    crop = crop_face(image, (-20, -20, 40, 40), size=40, margin=0.0)  # centre at the corner
    assert crop.shape == (40, 40, 3)
    assert (crop[:20, :20] == 80).all()  # outside both edges: the corner pixel repeated
    assert (crop[:20, 25:] == 50).all()  # above the frame: the top row repeated
    assert (crop[25:, 25:] == 200).all()  # inside: the image, not shifted
    assert crop_face(image, (500, 500, 10, 10), size=16).max() == 0  # wholly outside: black


def test_resize_square_and_largest_box() -> None:
    crop = np.zeros((128, 128, 3), np.uint8)
    assert resize_square(crop, 64).shape == (64, 64, 3)
    assert resize_square(crop, 128) is crop
    assert largest_box([]) is None
    assert largest_box([(0, 0, 10, 10), (0, 0, 30, 5), (0, 0, 20, 20)]) == 2


def test_crop_rejects_bad_images() -> None:
    with pytest.raises(ValueError):
        crop_face(np.zeros((10, 10), np.uint8), (0, 0, 5, 5), 8)


def test_apply_region_blacks_out_the_lower_half() -> None:
    from realtime.crop import apply_region

    crops = np.full((2, 10, 10, 3), 7, np.uint8)
    upper = apply_region(crops, "upper")
    assert upper[:, :5].min() == 7 and upper[:, 5:].max() == 0
    assert apply_region(crops, "full") is crops
    assert apply_region(crops[0], "upper")[5:].max() == 0  # one crop works too
    with pytest.raises(ValueError):
        apply_region(crops, "left")
