#!/usr/bin/env python3
"""Seeded fuzzing of the command-line tools: mutated copies of a clip, an image and a model through
``face-gender``, and a folder of mutated clips through ``face-gender-batch``.

    python scripts/fuzz_cli.py --runs 40 --json docs/measurements/fuzz.json

Each run must end with exit 0 or 2 (batch: 0, 2 or 3) and one clear ``error:``/``warning:`` line,
never a traceback, a crash (killed by a signal) or a hang, and must leave no partial file behind
and, when it fails, no file at a final output name unless its error line says what it kept (a
source that breaks part-way keeps the frames done before). The JSON counts runs, exit statuses and every
kind of failure; docs/reliability.md shows it. Runs are sequential with one interpreter thread,
so the figures hold on a busy machine. ``mutate`` is shared with tests/test_fuzz.py.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEED = 20261128
TIMEOUT_S = 120


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One of: truncate, flip bytes, zero a run, splice garbage, repeat a chunk."""
    buf = bytearray(data)
    kind = rng.choice(["truncate", "flip", "zero", "garbage", "repeat"])
    if kind == "truncate":
        return bytes(buf[: rng.randrange(0, len(buf))])
    if kind == "flip":
        for _ in range(rng.randint(1, 64)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif kind == "zero":
        i = rng.randrange(len(buf))
        buf[i : i + rng.randint(1, 4096)] = bytes(min(len(buf) - i, 4096))
    elif kind == "garbage":
        i = rng.randrange(len(buf))
        buf[i:i] = rng.randbytes(rng.randint(1, 2048))
    else:
        i = rng.randrange(len(buf))
        buf[i:i] = buf[i : i + rng.randint(1, 8192)]
    return bytes(buf)


def inputs(work: Path) -> tuple[bytes, bytes, bytes]:
    """A short synthetic clip, a face photo (JPEG) and the shipped model, as bytes."""
    import cv2

    from realtime.paths import GENDER_MODEL
    from realtime.sources import SyntheticSource, sample_face

    src = SyntheticSource(faces=1, frames=8, size=(320, 240), face_px=120)
    src.open()
    clip = work / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 15.0, (320, 240))
    for frame in src.frames():
        writer.write(frame.image)
    writer.release()
    ok, jpeg = cv2.imencode(".jpg", sample_face())
    assert ok
    return clip.read_bytes(), jpeg.tobytes(), GENDER_MODEL.read_bytes()


Job = tuple[str, Path, list[str], list[Path], tuple[int, ...]]  # kind, folder, command, outputs, exit codes


def cli_jobs(root: Path, runs: int, rng: random.Random, clip: bytes, jpeg: bytes, model: bytes) -> list[Job]:
    """``runs`` mutated clips, images and models, each through ``face-gender`` in its own folder."""
    realtime = [sys.executable, "-m", "realtime"]
    common = ["--no-display", "--no-progress", "--threads", "1"]
    jobs: list[Job] = []
    for kind in ("clip", "image", "model"):
        for k in range(runs):
            work = root / f"{kind}{k}"
            work.mkdir()
            out = work / "out"
            if kind == "clip":
                src = work / "in.mp4"
                src.write_bytes(mutate(clip, rng))
                outs = [out.with_suffix(".mp4"), out.with_suffix(".jsonl")]
                cmd = [*realtime, "--source", str(src), "--output", str(outs[0]), "--jsonl", str(outs[1])]
            elif kind == "image":
                src = work / "in.jpg"
                src.write_bytes(mutate(jpeg, rng))
                outs = [out.with_suffix(".jsonl")]
                cmd = [*realtime, "--source", str(src), "--output", str(out), "--jsonl", str(outs[0])]
            else:
                m = work / "m.tflite"
                m.write_bytes(mutate(model, rng))
                shutil.copy(ROOT / "models" / "gender_vgg16_int8.json", m.with_suffix(".json"))
                outs = [out.with_suffix(".jsonl")]
                cmd = [*realtime, "--source", "synthetic:frames=3,size=320x240", "--model", str(m), "--jsonl",
                       str(outs[0])]
            jobs.append((kind, work, [*cmd, *common], outs, (0, 2)))
    return jobs


def check(cmd: list[str], work: Path, failed_outputs: list[Path], allowed: tuple[int, ...]) -> dict[str, object]:
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"outcome": "hang", "seconds": TIMEOUT_S}
    err = proc.stderr
    problems = []
    if proc.returncode < 0:
        problems.append("crash")
    elif proc.returncode not in allowed:
        problems.append("unexpected_exit")
    if "Traceback" in err:
        problems.append("traceback")
    if proc.returncode > 0 and not any(line.startswith(("error:", "warning:")) for line in err.splitlines()):
        problems.append("no_error_line")
    # A source that breaks part-way keeps what was done and says so ("...; kept video X (3 frames)");
    # any other failure leaves no output at a final name.
    kept = any(line.startswith("error:") and "; kept " in line for line in err.splitlines())
    if proc.returncode == 2 and not kept and any(p.exists() for p in failed_outputs):
        problems.append("output_after_failure")
    if any(".partial" in p.name for p in work.rglob("*")):
        problems.append("partial_left")
    return {"outcome": problems[0] if problems else "ok", "exit": proc.returncode,
            "seconds": round(time.monotonic() - started, 2), "cmd": " ".join(cmd[2:])[:300],
            "stderr_tail": err[-400:] if problems else ""}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40, help="mutated inputs per kind (clip, image, model)")
    parser.add_argument("--batch-videos", type=int, default=20, help="mutated clips in the one batch run")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--json", type=Path, help="write the counts here")
    args = parser.parse_args()

    from tqdm import tqdm

    from realtime.machine import cpu_info

    rng = random.Random(args.seed)
    results: list[dict[str, object]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        root = Path(tmp)
        clip, jpeg, model = inputs(root)
        jobs = cli_jobs(root, args.runs, rng, clip, jpeg, model)
        videos = root / "batch_in"
        videos.mkdir()
        for k in range(args.batch_videos):
            (videos / f"v{k:03d}.mp4").write_bytes(mutate(clip, rng))
        jobs.append(("batch", root / "batch_out", [sys.executable, "-m", "realtime.batch", "--input", str(videos),
                                                   "--output", str(root / "batch_out"), "--workers", "1",
                                                   "--no-progress"], [], (0, 2, 3)))
        for kind, work, cmd, outs, allowed in tqdm(jobs, desc="fuzz", unit="run"):
            work.mkdir(exist_ok=True)
            results.append({"kind": kind, **check(cmd, work, outs, allowed)})
    outcomes = Counter(str(r["outcome"]) for r in results)
    summary = {
        "what": "mutated inputs (truncated, bit-flipped, zeroed, spliced, repeated) through the command-line tools",
        "machine": cpu_info(), "seed": args.seed, "seconds": round(time.monotonic() - started, 1),
        "runs": len(results), "runs_by_kind": dict(Counter(str(r["kind"]) for r in results)),
        "batch_videos": args.batch_videos,
        "exit_codes": {str(k): v for k, v in sorted(Counter(int(r.get("exit", -999)) for r in results).items())},
        "outcomes": dict(outcomes), "failures": [r for r in results if r["outcome"] != "ok"],
        "tracebacks": outcomes.get("traceback", 0), "hangs": outcomes.get("hang", 0),
        "crashes": outcomes.get("crash", 0),
    }
    text = json.dumps(summary, indent=1) + "\n"
    if args.json:
        args.json.write_text(text)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("machine", "failures")}))
    return 0 if outcomes.keys() <= {"ok"} else 1


if __name__ == "__main__":
    sys.exit(main())
