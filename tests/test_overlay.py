"""realtime.overlay: drawing happens last, on a copy."""

from __future__ import annotations

import numpy as np

from realtime.overlay import FaceView, caption, contact_sheet, draw_faces, draw_fps, ink_for


def test_draw_faces_works_on_a_copy() -> None:
    frame = np.full((240, 320, 3), 90, np.uint8)
    before = frame.copy()
    out = draw_faces(frame, [FaceView((50, 60, 80, 80), "female", 0.93, 1), FaceView((200, 5, 60, 60), None, None)],
                     fps=29.7)
    np.testing.assert_array_equal(frame, before)  # the input is untouched
    assert out.shape == frame.shape and not np.array_equal(out, frame)
    assert (out[60:140, 50] != 90).any()  # the box is drawn


def test_captions() -> None:
    assert caption(FaceView((0, 0, 1, 1), "male", 0.876)) == "male 0.88"
    assert caption(FaceView((0, 0, 1, 1), None, None)) == "..."  # waiting for the first result
    assert ink_for((255, 255, 255)) == (0, 0, 0) and ink_for((0, 0, 0)) == (255, 255, 255)


def test_fps_and_contact_sheet() -> None:
    frame = np.zeros((100, 100, 3), np.uint8)
    assert draw_fps(frame, 12.3).any() and not frame.any()
    crops = [(np.full((64, 64, 3), 200, np.uint8), "female", "female 0.91\na.jpg")] * 5
    sheet = contact_sheet(crops, tile_px=64, columns=3)
    assert sheet.shape == (2 * (64 + 36), 3 * 64, 3)
    assert contact_sheet([]).shape[0] > 0  # "no faces found" sheet
