"""A small seeded fuzz test: mutated copies of a clip, an image and a model through the CLI.

Every run must end with exit 0 or 2 (one clear error), never a traceback or a crash, and a run
that fails must leave no file at a final output name. Bounded: 30 runs one after another, each with
one interpreter thread (a busy 2-core machine has no threads to spare for parallel runs), about a
minute.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from realtime_helpers import REPO_ROOT, leftovers, synthetic_frames, write_clip

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from fuzz_cli import mutate

SEED = 20261128
RUNS_PER_KIND = 10


def run(args: list[str], out: Path) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    cmd = [sys.executable, "-m", "realtime", *args, "--no-display", "--no-progress", "--threads", "1"]
    return cmd, subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_mutated_inputs_end_cleanly(tmp_path: Path, face_image) -> None:
    rng = random.Random(SEED)
    clip = write_clip(tmp_path / "clip.mp4", synthetic_frames(8)).read_bytes()
    ok, jpeg = cv2.imencode(".jpg", face_image)
    assert ok
    model = (REPO_ROOT / "models" / "gender_vgg16_int8.tflite").read_bytes()
    jobs = []
    for kind in ("clip", "image", "model"):
        for k in range(RUNS_PER_KIND):
            work = tmp_path / f"{kind}{k}"
            work.mkdir()
            out = work / "out"
            if kind == "clip":
                src = work / "in.mp4"
                src.write_bytes(mutate(clip, rng))
                args = ["--source", str(src), "--output", str(out.with_suffix(".mp4")), "--jsonl",
                        str(out.with_suffix(".jsonl"))]
            elif kind == "image":
                src = work / "in.jpg"
                src.write_bytes(mutate(jpeg.tobytes(), rng))
                args = ["--source", str(src), "--output", str(out), "--jsonl", str(out.with_suffix(".jsonl"))]
            else:
                m = work / "m.tflite"
                m.write_bytes(mutate(model, rng))
                shutil.copy(REPO_ROOT / "models" / "gender_vgg16_int8.json", m.with_suffix(".json"))
                args = ["--source", "synthetic:frames=3,size=320x240", "--model", str(m), "--jsonl",
                        str(out.with_suffix(".jsonl"))]
            jobs.append((work, args))
    results = [(work, *run(args, work / "out")) for work, args in jobs]
    for work, cmd, proc in results:
        where = " ".join(cmd)
        assert proc.returncode in (0, 2), f"{where}: exit {proc.returncode}\n{proc.stderr[-1500:]}"
        assert "Traceback" not in proc.stderr, f"{where}\n{proc.stderr[-1500:]}"
        if proc.returncode == 2:
            errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
            assert errors, where
            if "; kept " not in errors[0]:  # a source that broke part-way keeps what was done, and says so
                assert not (work / "out.mp4").exists() and not (work / "out.jsonl").exists(), where
        assert not leftovers(work), where
