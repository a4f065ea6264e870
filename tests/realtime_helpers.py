"""Helpers for the runtime's tests: run the CLI, write small clips, check JSONL records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from realtime.sources import SyntheticSource

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_realtime(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m realtime ARGS --no-display --no-progress`` in the repository root."""
    cmd = [sys.executable, "-m", "realtime", *args, "--no-display", "--no-progress"]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def synthetic_frames(n: int, size: tuple[int, int] = (320, 240), faces: int = 1) -> list[np.ndarray]:
    src = SyntheticSource(faces=faces, frames=n, size=size, face_px=min(size) // 2)
    src.open()
    return [f.image for f in src.frames()]


def write_clip(path: Path, frames: list[np.ndarray], fps: float = 15.0, fourcc: str = "mp4v") -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"cannot write {path}"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def count_frames(path: Path) -> tuple[int, float, tuple[int, int]]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open as a video"
    n = 0
    while cap.read()[0]:
        n += 1
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return n, fps, size


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_record(rec: dict) -> None:
    """One JSONL line against the schema of docs/architecture.md (contract 1)."""
    assert set(rec) == {"frame", "time_s", "source", "faces"}
    assert isinstance(rec["frame"], int) and isinstance(rec["time_s"], float | int)
    assert rec["source"] is None or isinstance(rec["source"], str)
    for face in rec["faces"]:
        assert set(face) == {"track_id", "box", "detector_score", "label", "p_female", "apparent_age", "reason"}
        assert face["apparent_age"] is None or 0.0 <= face["apparent_age"] <= 150.0
        assert face["reason"] in (None, "child") and (face["reason"] is None or face["label"] == "uncertain")
        assert isinstance(face["track_id"], int)
        assert len(face["box"]) == 4 and all(isinstance(v, int) for v in face["box"])
        assert face["box"][2] > 0 and face["box"][3] > 0
        assert 0.0 <= face["detector_score"] <= 1.0
        assert face["label"] in ("female", "male", "uncertain")
        if face["p_female"] is None:  # no result yet (live sources classify in the background)
            assert face["label"] == "uncertain"
        else:
            assert 0.0 <= face["p_female"] <= 1.0


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_one_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, exactly one ``error:`` line containing every needle, and no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def leftovers(folder: Path) -> list[Path]:
    """Temporary or partial files that a clean run must not leave behind."""
    return [p for p in folder.rglob("*") if ".partial" in p.name]
