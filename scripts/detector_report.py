#!/usr/bin/env python3
"""Measure the two face detector backends against each other: parity and speed.

Both backends run both bundled BlazeFace models on every frame of the demo clip and on a few
still images of other shapes (the Grace Hopper sample photo of realtime/sample/, on a wide canvas,
a demo frame upscaled 2x, a portrait crop). Faces are matched by IoU; the report gives face
counts, IoU and score differences, and milliseconds per frame for each backend (median of 3
passes over the clip, after one warm-up pass).

    python scripts/detector_report.py --json docs/measurements/detector.json

then ``python scripts/render_docs.py`` puts the numbers into docs/detector.md. Stop other work
on the machine first: the timings are wall-clock.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from benchmark import cpu_info, versions, write_json  # noqa: E402

from realtime.detection import iou  # noqa: E402
from realtime.errors import UserError  # noqa: E402
from realtime.face_detector import FaceDetector, mediapipe_support  # noqa: E402
from realtime.paths import DEMO_CLIP  # noqa: E402
from realtime.sources import read_video_frames  # noqa: E402

log = logging.getLogger("detector_report")


def still_images(frames: list[np.ndarray]) -> list[np.ndarray]:
    from realtime.sources import sample_face

    photo = sample_face()
    wide = np.full((480, 960, 3), 200, np.uint8)
    small = cv2.resize(photo, None, fx=0.4, fy=0.4)
    wide[100:100 + small.shape[0], 600:600 + small.shape[1]] = small
    mid = len(frames) // 2
    return [photo, wide, cv2.resize(frames[mid // 2], None, fx=2.0, fy=2.0), frames[mid][:, 150:420].copy()]


def parity(model: str, frames: list[np.ndarray], stills: list[np.ndarray]) -> dict[str, Any]:
    ious: list[float] = []
    score_diffs: list[float] = []
    faces = {"mediapipe": 0, "litert": 0}
    count_mismatch = 0
    for mode, images in (("video", frames), ("image", stills)):
        with FaceDetector(model, mode=mode, backend="mediapipe") as mp, \
                FaceDetector(model, mode=mode, backend="litert") as lt:
            for i, image in enumerate(images):
                a, b = mp.detect(image, i * 40), lt.detect(image, i * 40)
                faces["mediapipe"] += len(a)
                faces["litert"] += len(b)
                count_mismatch += len(a) != len(b)
                for face in a:
                    if not b:
                        continue
                    best = max(b, key=lambda other: iou(face.box, other.box))
                    ious.append(iou(face.box, best.box))
                    score_diffs.append(abs(face.score - best.score))
    arr = np.array(ious)
    return {"images": len(frames) + len(stills), "faces": faces, "images_with_other_count": count_mismatch,
            "pairs": len(ious), "iou_min": round(float(arr.min()), 4), "iou_mean": round(float(arr.mean()), 4),
            "share_iou_at_least_0_9": round(float((arr >= 0.9).mean()), 4),
            "score_diff_max": round(max(score_diffs), 4)}


def timing(model: str, backend: str, frames: list[np.ndarray], passes: int = 3) -> dict[str, Any]:
    with FaceDetector(model, mode="video", backend=backend) as det:
        ts = 0
        for frame in frames:  # warm-up
            det.detect(frame, ts)
            ts += 33
        runs = []
        for _ in range(passes):
            start = time.perf_counter()
            for frame in frames:
                det.detect(frame, ts)
                ts += 33
            runs.append((time.perf_counter() - start) / len(frames) * 1000.0)
    return {"ms_per_frame": round(statistics.median(runs), 3), "passes": [round(r, 3) for r in runs]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, required=True, help="report to write")
    parser.add_argument("--clip", type=Path, default=DEMO_CLIP, help="video (default: the demo clip)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        ok, why = mediapipe_support()
        if not ok:
            raise UserError(f"both backends are needed to compare them: {why}")
        frames = read_video_frames(args.clip)
        stills = still_images(frames)
        report: dict[str, Any] = {
            "clip": str(args.clip.relative_to(REPO_ROOT) if args.clip.is_relative_to(REPO_ROOT) else args.clip),
            "frame_size": list(frames[0].shape[1::-1]), "frames": len(frames), "stills": len(stills),
            "cpu": cpu_info(), "versions": versions(), "models": {}}
        for model in ("short", "full"):
            log.info("%s-range: parity", model)
            entry: dict[str, Any] = {"parity": parity(model, frames, stills)}
            for backend in ("mediapipe", "litert"):
                log.info("%s-range: timing %s", model, backend)
                entry[backend] = timing(model, backend, frames)
            entry["speedup"] = round(entry["mediapipe"]["ms_per_frame"] / entry["litert"]["ms_per_frame"], 2)
            report["models"][model] = entry
        write_json(args.json, report)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
