"""End to end: the CLI on clips, images and folders the tests make from a real face photo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from fixtures import FaceDataset
from realtime_helpers import (
    REPO_ROOT,
    check_record,
    count_frames,
    leftovers,
    read_jsonl,
    run_realtime,
    synthetic_frames,
    write_clip,
)

pytestmark = pytest.mark.slow


def test_video_file_to_annotated_video_and_jsonl(colour_model: Path, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", synthetic_frames(30, (320, 240)), fps=15.0)
    out, jsonl = tmp_path / "out" / "annotated.mp4", tmp_path / "out" / "faces.jsonl"
    proc = run_realtime("--source", str(clip), "--output", str(out), "--jsonl", str(jsonl),
                        "--model", str(colour_model))
    assert proc.returncode == 0, proc.stderr
    n, fps, size = count_frames(out)
    assert (n, size) == (30, (320, 240)) and abs(fps - 15.0) < 0.01
    records = read_jsonl(jsonl)
    assert [r["frame"] for r in records] == list(range(30))
    for rec in records:
        check_record(rec)
    with_face = [r for r in records if r["faces"]]
    assert len(with_face) >= 27  # the face is in every frame
    ids = {f["track_id"] for r in with_face for f in r["faces"]}
    assert len(ids) <= 2  # one moving face keeps its track id
    assert all(f["label"] == "female" for r in with_face for f in r["faces"])  # colour → "female"
    assert abs(records[15]["time_s"] - 1.0) < 1e-6
    assert not leftovers(tmp_path)


def test_max_frames_and_bundled_demo_clip(colour_model: Path, tmp_path: Path) -> None:
    jsonl = tmp_path / "demo.jsonl"
    proc = run_realtime("--source", str(REPO_ROOT / "assets" / "face-demographics-walking-and-pause.mp4"),
                        "--jsonl", str(jsonl), "--max-frames", "12", "--model", str(colour_model))
    assert proc.returncode == 0, proc.stderr
    records = read_jsonl(jsonl)
    assert len(records) == 12
    assert sum(len(r["faces"]) for r in records) >= 12  # full-range finds the people walking


def test_image_folder(colour_model: Path, face_dataset: FaceDataset, tmp_path: Path) -> None:
    outdir = tmp_path / "labelled"
    proc = run_realtime("--source", str(face_dataset.root), "--output", str(outdir), "--model", str(colour_model))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == len(face_dataset.unreadable)  # corrupt and zero-byte files skipped
    records = read_jsonl(outdir / "predictions.jsonl")
    assert len(records) == face_dataset.readable
    for rec in records:
        check_record(rec)
        assert (face_dataset.root / rec["source"]).is_file()
        assert (outdir / rec["source"]).is_file()  # annotated copy under the same name
    found = {r["source"] for r in records if r["faces"]}
    faces = {p.relative_to(face_dataset.root).as_posix() for p in face_dataset.faces}
    assert faces <= found  # every face image has its face found
    labels = {r["source"]: r["faces"][0]["label"] for r in records if r["faces"]}
    assert all(labels[f] == ("female" if f.startswith("female/") else "male") for f in faces)
    sheet = cv2.imread(str(outdir / "contact_sheet.jpg"))
    assert sheet is not None and sheet.shape[0] >= 128
    assert not leftovers(outdir)


def test_single_image_with_uppercase_extension(colour_model: Path, face_dataset: FaceDataset,
                                               tmp_path: Path) -> None:
    image = tmp_path / "PHOTO.JPG"
    image.write_bytes(face_dataset.faces[0].read_bytes())
    jsonl = tmp_path / "one.jsonl"
    proc = run_realtime("--source", str(image), "--jsonl", str(jsonl), "--model", str(colour_model))
    assert proc.returncode == 0, proc.stderr
    (rec,) = read_jsonl(jsonl)
    assert rec["source"] == "PHOTO.JPG" and len(rec["faces"]) == 1


def test_ctrl_c_keeps_a_valid_shorter_video(colour_model: Path, tmp_path: Path) -> None:
    out, jsonl = tmp_path / "long.mp4", tmp_path / "long.jsonl"
    cmd = [sys.executable, "-m", "realtime", "--source", "synthetic:faces=1,frames=100000,size=320x240",
           "--output", str(out), "--jsonl", str(jsonl), "--no-display", "--no-progress",
           "--model", str(colour_model)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".long.partial-*.mp4")):
        time.sleep(0.2)
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    n, _, _ = count_frames(out)
    assert n > 0
    assert f"({n} frames)" in stderr  # it says how many frames the output holds
    assert len(read_jsonl(jsonl)) == n
    assert not leftovers(tmp_path)


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_window_mode_without_display_falls_back(colour_model: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.run([sys.executable, "-m", "realtime", "--source", "synthetic:frames=5,size=320x240",
                           "--model", str(colour_model), "--no-progress"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "no display available" in proc.stderr


def test_run_accepts_an_opened_source(colour_model: Path) -> None:
    from realtime.pipeline import Config, run
    from realtime.sources import open_source

    with open_source("synthetic:faces=1,frames=4,size=320x240") as source:
        stats = run(Config(source="ignored", display=False, progress=False, model=colour_model), source=source)
        assert stats.frames == 4 and source.kind == "synthetic"
