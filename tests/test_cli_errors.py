"""Bad input is normal input: one ``error:`` line, exit 2, no traceback, no half-written files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fixtures import write_metadata
from realtime_helpers import (
    assert_one_error,
    count_frames,
    leftovers,
    read_jsonl,
    run_realtime,
    synthetic_frames,
    write_clip,
)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", synthetic_frames(10, (320, 240)))


def test_missing_path(colour_model: Path, tmp_path: Path) -> None:
    proc = run_realtime("--source", str(tmp_path / "nope.mp4"), "--model", str(colour_model))
    assert_one_error(proc, "no such file", "nope.mp4")


def test_zero_byte_video(colour_model: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    out = tmp_path / "out.mp4"
    proc = run_realtime("--source", str(empty), "--output", str(out), "--model", str(colour_model))
    assert_one_error(proc, "empty")
    assert not out.exists() and not leftovers(tmp_path)


def test_corrupt_video(colour_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    out = tmp_path / "out.mp4"
    proc = run_realtime("--source", str(bad), "--output", str(out), "--model", str(colour_model))
    assert_one_error(proc, "bad.mp4")
    assert not out.exists() and not leftovers(tmp_path)


def test_truncated_video_keeps_what_decoded(colour_model: Path, tmp_path: Path) -> None:
    full = write_clip(tmp_path / "full.avi", synthetic_frames(40, (320, 240)), fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    proc = run_realtime("--source", str(cut), "--output", str(out), "--jsonl", str(jsonl),
                        "--model", str(colour_model))
    line = assert_one_error(proc, "ended after", "of 40 frames", "truncated")
    n, _, _ = count_frames(out)  # a valid, complete file with the frames that decoded
    assert 0 < n < 40 and f"({n} frames)" in line
    assert len(read_jsonl(jsonl)) == n
    assert not leftovers(tmp_path)


def test_corrupt_file_in_folder_is_skipped(colour_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    import cv2

    for i, frame in enumerate(synthetic_frames(3, (320, 240))):
        cv2.imwrite(str(folder / f"ok{i}.png"), frame)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (folder / "notes.txt").write_text("not an image, not even looked at")
    out = tmp_path / "out"
    proc = run_realtime("--source", str(folder), "--output", str(out), "--model", str(colour_model))
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "broken.jpg" in warnings[0]
    assert len(read_jsonl(out / "predictions.jsonl")) == 3


def test_folder_without_images(colour_model: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = run_realtime("--source", str(tmp_path / "empty"), "--model", str(colour_model))
    assert_one_error(proc, "no images")


def test_camera_that_does_not_exist(colour_model: Path) -> None:
    proc = run_realtime("--source", "97", "--model", str(colour_model))
    assert_one_error(proc, "camera 97")


def test_unwritable_output(colour_model: Path, clip: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    proc = run_realtime("--source", str(clip), "--output", str(blocker / "sub" / "out.mp4"),
                        "--model", str(colour_model))
    assert_one_error(proc, "cannot write")
    proc = run_realtime("--source", str(clip), "--jsonl", str(tmp_path), "--model", str(colour_model))
    assert_one_error(proc, "is a folder")
    proc = run_realtime("--source", str(clip), "--output", str(tmp_path / "out.txt"), "--model", str(colour_model))
    assert_one_error(proc, "video file")


def test_missing_model(clip: Path, tmp_path: Path) -> None:
    proc = run_realtime("--source", str(clip), "--model", str(tmp_path / "none.tflite"))
    assert_one_error(proc, "not found")


def test_corrupt_model(clip: Path, tmp_path: Path) -> None:
    model = tmp_path / "corrupt.tflite"
    model.write_bytes(b"TFL3" + b"\x00garbage" * 500)
    write_metadata(model, 32)
    out = tmp_path / "out.mp4"
    proc = run_realtime("--source", str(clip), "--output", str(out), "--model", str(model))
    assert_one_error(proc, "cannot load model")
    assert not out.exists() and not leftovers(tmp_path)


def test_wrong_shape_model(clip: Path, tmp_path: Path) -> None:
    model = tmp_path / "landmarks.tflite"  # a real TFLite model, but not a classifier
    shutil.copy(Path(__file__).resolve().parent.parent / "models" / "face_landmark.tflite", model)
    write_metadata(model, 192)
    proc = run_realtime("--source", str(clip), "--model", str(model))
    assert_one_error(proc, "2 outputs but its metadata names none")


def test_model_without_metadata(colour_model: Path, clip: Path, tmp_path: Path) -> None:
    model = tmp_path / "bare.tflite"
    shutil.copy(colour_model, model)
    proc = run_realtime("--source", str(clip), "--model", str(model))
    assert_one_error(proc, "metadata not found")


def test_bad_arguments_are_usage_errors(clip: Path) -> None:
    proc = run_realtime("--source", str(clip), "--min-face-score", "3")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = run_realtime("--source", "ftp://example.invalid/x")
    assert_one_error(proc, "unsupported URL")
