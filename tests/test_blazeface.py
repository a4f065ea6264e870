"""BlazeFace on LiteRT: anchors, box decoding, weighted NMS, letterbox, backend choice."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime import blazeface as bf
from realtime import face_detector as fd
from realtime.errors import ModelError, UserError
from realtime.paths import DETECTOR_MODELS

ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU part\t: 0xd08
"""
ARM_LSE_CPUINFO = ARM_CPUINFO.replace("crc32 cpuid", "crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp")


# -- anchors ----------------------------------------------------------------------------------------
def test_short_range_anchors_match_mediapipe_layout() -> None:
    anchors = bf.ssd_anchors(128, 128, bf.SHORT_RANGE)
    assert anchors.shape == (896, 4)
    # Stride 8: 16 x 16 cells, 2 anchors each; then stride 16 (three layers merged): 8 x 8 x 6.
    np.testing.assert_allclose(anchors[0], [0.5 / 16, 0.5 / 16, 1, 1])
    np.testing.assert_allclose(anchors[1], anchors[0])
    np.testing.assert_allclose(anchors[2], [1.5 / 16, 0.5 / 16, 1, 1])
    np.testing.assert_allclose(anchors[511], [15.5 / 16, 15.5 / 16, 1, 1])
    np.testing.assert_allclose(anchors[512], [0.5 / 8, 0.5 / 8, 1, 1])
    np.testing.assert_allclose(anchors[512:518], np.tile([[0.5 / 8, 0.5 / 8, 1, 1]], (6, 1)))
    np.testing.assert_allclose(anchors[-1], [7.5 / 8, 7.5 / 8, 1, 1])


def test_full_range_anchors_match_mediapipe_layout() -> None:
    anchors = bf.ssd_anchors(192, 192, bf.FULL_RANGE)
    assert anchors.shape == (2304, 4)
    np.testing.assert_allclose(anchors[0], [0.5 / 48, 0.5 / 48, 1, 1])
    np.testing.assert_allclose(anchors[1], [1.5 / 48, 0.5 / 48, 1, 1])
    np.testing.assert_allclose(anchors[48], [0.5 / 48, 1.5 / 48, 1, 1])
    np.testing.assert_allclose(anchors[-1], [47.5 / 48, 47.5 / 48, 1, 1])


def test_anchor_sizes_when_not_fixed() -> None:
    opts = bf.AnchorOptions(strides=(8, 16), interpolated_scale_aspect_ratio=1.0, fixed_anchor_size=False)
    anchors = bf.ssd_anchors(32, 32, opts)
    # Stride 8: 4 x 4 cells x 2 (scale 0.1484375 and the interpolated sqrt(0.1484375 * 0.75)).
    assert len(anchors) == 4 * 4 * 2 + 2 * 2 * 2
    np.testing.assert_allclose(anchors[0, 2:], [0.1484375, 0.1484375])
    np.testing.assert_allclose(anchors[1, 2:], [np.sqrt(0.1484375 * 0.75)] * 2, rtol=1e-6)
    np.testing.assert_allclose(anchors[-2, 2:], [0.75, 0.75])  # last layer: max scale ...
    np.testing.assert_allclose(anchors[-1, 2:], [np.sqrt(0.75)] * 2, rtol=1e-6)  # ... and sqrt(0.75 * 1)


# -- decoding -----------------------------------------------------------------------------------------
def test_decode_known_output() -> None:
    anchors = np.array([[0.25, 0.5, 1.0, 1.0], [0.75, 0.75, 1.0, 1.0]], np.float32)
    raw = np.zeros((2, 16), np.float32)
    # Anchor 0: centre moved by (+12.8, -6.4) px at 128 px = (+0.1, -0.05); size 32 x 64 px.
    raw[0, :4] = [12.8, -6.4, 32.0, 64.0]
    raw[0, 4:6] = [-12.8, 0.0]  # first keypoint 0.1 left of the anchor centre
    boxes, kps = bf.decode_boxes(raw, anchors, (128, 128))
    np.testing.assert_allclose(boxes[0], [0.35 - 0.125, 0.45 - 0.25, 0.35 + 0.125, 0.45 + 0.25], atol=1e-6)
    np.testing.assert_allclose(kps[0, 0], [0.15, 0.5], atol=1e-6)
    np.testing.assert_allclose(kps[0, 1:], np.tile([[0.25, 0.5]], (5, 1)), atol=1e-6)
    np.testing.assert_allclose(boxes[1], [0.75, 0.75, 0.75, 0.75], atol=1e-6)  # zero size


def test_sigmoid_scores_clip_like_mediapipe() -> None:
    scores = bf.sigmoid_scores(np.array([[0.0], [1e6], [-1e6], [2.0]], np.float32))
    np.testing.assert_allclose(scores, [0.5, 1.0, 0.0, 1 / (1 + np.exp(-2.0))], atol=1e-6)


# -- weighted NMS ---------------------------------------------------------------------------------------
def test_weighted_nms_averages_a_cluster_by_score() -> None:
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3], [0.6, 0.6, 0.8, 0.8]], np.float32)
    kps = np.zeros((3, 6, 2), np.float32)
    kps[0, :, 0], kps[1, :, 0], kps[2, :, 0] = 0.2, 0.22, 0.7
    scores = np.array([0.9, 0.6, 0.7], np.float32)
    out = bf.weighted_nms(boxes, kps, scores, 0.3)
    assert [round(s, 3) for _, _, s in out] == [0.9, 0.7]
    w = np.array([0.9, 0.6]) / 1.5
    np.testing.assert_allclose(out[0][0], w @ boxes[:2], atol=1e-6)
    np.testing.assert_allclose(out[0][1][:, 0], np.full(6, w @ [0.2, 0.22]), atol=1e-6)
    np.testing.assert_allclose(out[1][0], boxes[2])  # alone: unchanged


def test_weighted_nms_keeps_boxes_below_the_overlap_threshold() -> None:
    boxes = np.array([[0.0, 0.0, 0.2, 0.2], [0.1, 0.0, 0.3, 0.2]], np.float32)  # IoU 1/3
    out = bf.weighted_nms(boxes, np.zeros((2, 6, 2), np.float32), np.array([0.8, 0.7], np.float32), 0.4)
    assert len(out) == 2
    out = bf.weighted_nms(boxes, np.zeros((2, 6, 2), np.float32), np.array([0.8, 0.7], np.float32), 0.3)
    assert len(out) == 1


def test_weighted_nms_of_nothing() -> None:
    assert bf.weighted_nms(np.zeros((0, 4), np.float32), np.zeros((0, 6, 2), np.float32),
                           np.zeros(0, np.float32), 0.3) == []


# -- letterbox and the whole detector ---------------------------------------------------------------------
def test_letterbox_keeps_aspect_and_centres() -> None:
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[40:60, 90:110] = 255  # a square in the middle
    image, (w, h), (x, y) = bf.letterbox(frame, (64, 64))
    assert (w, h) == (200, 200) and (x, y) == (0, -50)
    assert image.shape == (64, 64, 3)
    assert image[:14].max() == 0 and image[-14:].max() == 0  # zero border above and below
    ys, xs = np.nonzero(image[..., 0] > 127)
    assert abs(xs.mean() - 31.5) < 1 and abs(ys.mean() - 31.5) < 1


@pytest.mark.parametrize(("model", "frame_size"), [("short", (360, 480)), ("full", (720, 1280))])
def test_litert_detector_finds_the_face_in_a_wide_frame(face_image: np.ndarray, model: str,
                                                         frame_size: tuple[int, int]) -> None:
    frame = np.full((*frame_size, 3), 90, np.uint8)
    small = cv2.resize(face_image, None, fx=0.5, fy=0.5)
    x0, y0 = frame_size[1] - small.shape[1] - 20, 50
    frame[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    with fd.FaceDetector(model, backend="litert") as det:
        faces = det.detect(frame)
    assert det.backend == "litert"
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    assert x0 < x < x0 + small.shape[1] and y0 < y < y0 + small.shape[0]
    assert 60 < w < 220 and 0.8 < w / h < 1.25
    assert faces[0].score > 0.7
    assert len(faces[0].keypoints) == 6
    eye_r, eye_l = faces[0].keypoints[:2]
    assert x < eye_r[0] < eye_l[0] < x + w and y < eye_r[1] < y + h / 2


def test_litert_detector_no_face_and_tiny_frames() -> None:
    with fd.FaceDetector("short", backend="litert") as det:
        assert det.detect(np.zeros((240, 320, 3), np.uint8)) == []
        assert det.detect(np.zeros((1, 1, 3), np.uint8)) == []


def test_wrong_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"not a BlazeFace model|cannot load"):
        bf.BlazeFaceLiteRT(DETECTOR_MODELS["short"].parent / "face_landmark.tflite")
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"not a model")
    with pytest.raises(ModelError):
        bf.BlazeFaceLiteRT(bogus)


# -- backend choice --------------------------------------------------------------------------------------
@pytest.fixture
def cpuinfo(tmp_path: Path):
    def write(text: str) -> Path:
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        return path

    return write


@pytest.fixture
def mediapipe_present(monkeypatch: pytest.MonkeyPatch) -> None:
    real = fd.importlib.util.find_spec
    monkeypatch.setattr(fd.importlib.util, "find_spec",
                        lambda name, *a: object() if name == "mediapipe" else real(name, *a))


def test_pi4_cpu_without_atomics_cannot_run_mediapipe(cpuinfo, mediapipe_present) -> None:
    ok, why = fd.mediapipe_support("aarch64", cpuinfo(ARM_CPUINFO))
    assert not ok and "atomics" in why and "Pi 4" in why
    assert fd.mediapipe_support("aarch64", cpuinfo(ARM_LSE_CPUINFO)) == (True, "")
    assert fd.mediapipe_support("x86_64", cpuinfo(ARM_CPUINFO)) == (True, "")


def test_auto_uses_litert_on_a_pi4_and_says_so_once(cpuinfo, mediapipe_present, caplog) -> None:
    fd._announced.clear()
    path = cpuinfo(ARM_CPUINFO)
    with caplog.at_level(logging.INFO, logger="realtime.face_detector"):
        assert fd.resolve_backend("auto", "aarch64", path) == "litert"
        assert fd.resolve_backend("auto", "aarch64", path) == "litert"
    lines = [r.getMessage() for r in caplog.records if "LiteRT" in r.getMessage()]
    assert len(lines) == 1 and "atomics" in lines[0]


def test_forced_mediapipe_on_a_pi4_is_one_clear_error(cpuinfo, mediapipe_present) -> None:
    with pytest.raises(UserError, match=r"cannot run here: .*atomics.*--detector-backend litert"):
        fd.resolve_backend("mediapipe", "aarch64", cpuinfo(ARM_CPUINFO))
    assert fd.resolve_backend("mediapipe", "aarch64", cpuinfo(ARM_LSE_CPUINFO)) == "mediapipe"


def test_absent_mediapipe(monkeypatch: pytest.MonkeyPatch) -> None:
    real = fd.importlib.util.find_spec
    monkeypatch.setattr(fd.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mediapipe" else real(name, *a))
    assert fd.mediapipe_support() == (False, "mediapipe is not installed")
    assert fd.resolve_backend("auto") == "litert"
    with pytest.raises(UserError, match=r"not installed: pip install 'face-gender-realtime\[mediapipe\]'"):
        fd.resolve_backend("mediapipe")
    with pytest.raises(UserError, match="unknown detector backend"):
        fd.resolve_backend("gpu")


def test_unreadable_cpuinfo_does_not_block(tmp_path: Path, mediapipe_present) -> None:
    assert fd.cpu_features(tmp_path / "missing") is None
    assert fd.mediapipe_support("aarch64", tmp_path / "missing") == (True, "")


def test_cli_forced_backend_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from realtime.__main__ import main

    monkeypatch.setattr(fd, "mediapipe_support", lambda *a, **k: (False, "this Arm CPU lacks atomics"))
    rc = main(["--source", "synthetic:faces=1,frames=2", "--no-display", "--no-progress",
               "--detector-backend", "mediapipe"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err == ["error: --detector-backend mediapipe cannot run here: this Arm CPU lacks atomics; "
                   "use --detector-backend litert"]


def test_cli_backend_without_mediapipe_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The lean runtime has no MediaPipe: forcing its backend is one error line naming the extra."""
    from realtime.__main__ import main

    real = fd.importlib.util.find_spec
    monkeypatch.setattr(fd.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mediapipe" else real(name, *a))
    rc = main(["--source", "synthetic:faces=1,frames=2", "--no-display", "--no-progress",
               "--detector-backend", "mediapipe"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("error: --detector-backend mediapipe needs MediaPipe, which is not installed: ")
    assert "pip install 'face-gender-realtime[mediapipe]'" in err[0] and "Traceback" not in err[0]
