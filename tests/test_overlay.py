"""realtime.overlay: drawing happens last, on a copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from realtime.face import Face
from realtime.overlay import caption, contact_sheet, draw_faces, ink_for


def test_draw_faces_works_on_a_copy() -> None:
    frame = np.full((240, 320, 3), 90, np.uint8)
    before = frame.copy()
    out = draw_faces(frame, [Face((50, 60, 80, 80), "female", {"p_female": 0.93}, 1), Face((200, 5, 60, 60))],
                     fps=29.7)
    np.testing.assert_array_equal(frame, before)  # the input is untouched
    assert out.shape == frame.shape and not np.array_equal(out, frame)
    assert (out[60:140, 50] != 90).any()  # the box is drawn


def test_captions() -> None:
    assert caption(Face((0, 0, 1, 1), "male", {"p_female": 0.124})) == "male 0.88"
    assert caption(Face((0, 0, 1, 1))) == "..."  # waiting for the first result
    assert ink_for((255, 255, 255)) == (0, 0, 0) and ink_for((0, 0, 0)) == (255, 255, 255)


def test_fps_and_contact_sheet() -> None:
    frame = np.zeros((100, 100, 3), np.uint8)
    assert draw_faces(frame, [], fps=12.3).any() and not frame.any()
    crops = [(np.full((64, 64, 3), 200, np.uint8), "female", "female 0.91\na.jpg")] * 5
    sheet = contact_sheet(crops, tile_px=64, columns=3)
    assert sheet.shape == (2 * (64 + 36), 3 * 64, 3)
    assert contact_sheet([]).shape[0] > 0  # "no faces found" sheet


def test_contact_sheet_captions_stay_in_their_tile() -> None:
    import cv2

    from realtime.overlay import FONT, fit_text

    name = "26_1_2_20170116184253567.jpg.chip.jpg"
    short = fit_text(name, 120, 0.42, 1)
    assert ".." in short and short.endswith(".jpg") and cv2.getTextSize(short, FONT, 0.42, 1)[0][0] + 2 <= 120
    assert fit_text("a.jpg", 120, 0.42, 1) == "a.jpg"
    black = np.zeros((64, 64, 3), np.uint8)
    sheet = contact_sheet([(black, "female", f"female 0.91\n{name}"), (black, "male", "")], tile_px=64, columns=2)
    assert sheet[64:, :64].max() == 255  # the caption is drawn in its own cell...
    assert (sheet[66:, 64:] == 32).all()  # ...and nothing of it spills into the next one (below its border)


# -- live window: mirror, blur, panels -------------------------------------------------------------
from realtime.overlay import HELP_LINES, LiveStatus, draw_status, mirror_box  # noqa: E402


def test_mirror_flips_the_picture_and_boxes_but_not_the_text() -> None:
    frame = np.zeros((120, 200, 3), np.uint8)
    frame[:, :50] = (0, 0, 255)  # red on the left of the captured frame
    face = Face((10, 20, 40, 40), "female", {"p_female": 0.9}, 1)
    shown = draw_faces(frame, [face], mirror=True)
    assert shown[100, 195].tolist() == [0, 0, 255]  # the red block is now on the right
    expected = draw_faces(np.ascontiguousarray(frame[:, ::-1]),
                          [Face(mirror_box(face.box, 200), "female", {"p_female": 0.9}, 1)])
    assert np.array_equal(shown, expected)  # same as drawing unmirrored text on the flipped picture
    assert mirror_box((10, 20, 40, 40), 200) == (150, 20, 40, 40)


def test_blur_changes_only_the_face_region_once_for_every_drawing() -> None:
    from realtime.pipeline import FacePipeline
    from realtime.sources import Frame

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    before = frame.copy()
    pipeline = FacePipeline(detector=None, classifier=None, blur=True)  # type: ignore[arg-type]  # drawing only
    picture, shown = pipeline.draw(Frame(0, 0.0, frame), [Face((100, 60, 60, 60))])
    assert not np.array_equal(picture[70:110, 110:150], frame[70:110, 110:150])  # the face region is blurred
    assert np.array_equal(picture[:, 250:], frame[:, 250:]) and np.array_equal(shown[:, 250:], frame[:, 250:])
    assert np.array_equal(frame, before)  # on a copy
    # The window draws on that picture (mirrored here): the same blur, never a second one.
    window = draw_faces(picture, [Face((100, 60, 60, 60))], mirror=True)
    assert np.array_equal(window[70:110, 300 - 150:300 - 110], picture[70:110, 110:150][:, ::-1])


def test_child_caption() -> None:
    assert caption(Face((0, 0, 1, 1), "uncertain", {"p_female": 0.8}, reason="child")) == "uncertain (child)"


@pytest.mark.parametrize("size", [(240, 320), (1080, 1920)])
@pytest.mark.parametrize("level", [0, 255])
def test_status_bar_sits_below_the_picture_and_reads_on_any_scene(size: tuple[int, int], level: int) -> None:
    frame = np.full((*size, 3), level, np.uint8)
    status = LiveStatus(fps=29.7, faces_now=2, seen={"female": 3, "male": 1, "uncertain": 0}, recording=True,
                        toast="snapshot: snapshots/2026-11-28_12-00-00.png")
    out = draw_status(frame.copy(), status)
    h, w = size
    assert out.shape[1] == w and out.shape[0] > h  # a bar under the picture ...
    assert np.array_equal(out[:h], frame)  # ... which covers no part of it (no face, no label)
    bar = out[h:].mean(axis=2)
    # Light text on a dark bar, whatever the scene above it; nothing cut off at the right edge.
    assert (bar < 60).mean() > 0.5 and (bar > 200).any()
    assert (out[h:, -3:] == out[h + 1, -1]).all()


def test_help_overlay_lists_the_keys() -> None:
    frame = np.full((480, 640, 3), 128, np.uint8)
    out = draw_status(frame.copy(), LiveStatus(show_help=True))
    centre = out[150:330, 150:490]
    assert (centre != 128).any() and len(HELP_LINES) == 5


@pytest.mark.parametrize("thickness", [1, 2])
def test_text_shadow_sits_under_the_text(thickness: int) -> None:
    """The shadow is the text shifted by a pixel or two, never a wider, bolder copy sticking out past
    its end (OpenCV 5 draws a thicker stroke as a wider font)."""
    import cv2

    from realtime.overlay import FONT, draw_text

    text, scale = "uncertain (child)", 0.5
    image = np.full((40, 300, 3), 90, np.uint8)
    draw_text(image, text, (10, 25), scale, thickness)
    inked = np.flatnonzero((np.abs(image.astype(int) - 90).sum(axis=2) > 30).any(axis=0))
    (width, _), _ = cv2.getTextSize(text, FONT, scale, thickness)
    assert inked.size and inked[0] >= 10 - 2 and inked[-1] <= 10 + width + 3


def test_reports_and_pages_use_the_overlay_colours() -> None:
    """The batch report and the live view page colour labels as the overlay draws them."""
    from realtime.batch.report import COLOURS as REPORT
    from realtime.overlay import COLOURS as BGR

    css = (Path(__file__).resolve().parent.parent / "realtime" / "static" / "serve.css").read_text()
    for label in ("female", "male"):
        b, g, r = BGR[label]
        assert REPORT[label] == f"#{r:02x}{g:02x}{b:02x}"
        assert f"--{label}: {REPORT[label]}" in css


def test_an_uncertain_face_says_which_way_it_leans() -> None:
    """"uncertain 0.70" did not say which label 0.70 belonged to: the caption names it."""
    from dataclasses import replace

    face = Face((0, 0, 10, 10), "uncertain", {"p_female": 0.3}, 1, 0.9)
    assert caption(face) == "male? 0.70"
    face = replace(face, outputs={"p_female": 0.58})
    assert caption(face) == "female? 0.58"
    assert caption(replace(face, reason="child")) == "uncertain (child)"
    sure = Face((0, 0, 10, 10), "female", {"p_female": 0.93}, 2, 0.9)
    assert caption(sure) == "female 0.93" and sure.lean is None
