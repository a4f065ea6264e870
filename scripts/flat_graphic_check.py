#!/usr/bin/env python3
"""Why a faceless camera picture got a face, and what the flat-graphic rule costs real faces.

    python scripts/flat_graphic_check.py --json docs/measurements/flat_graphic.json

1. Captures 120 frames of Chromium's fake camera (the green test pattern a browser shows without a
   camera; headless Chromium at /usr/bin/chromium through Playwright, 50 ms apart) and runs both
   BlazeFace models over them as the live pipeline does, with and without the rule
   (``realtime.face_detector.flat_graphic``): frames with a "face" at the default score 0.5.
2. Runs the still-image detector (both models, as uploads and folders use it) over real faces with
   and without the rule: the real masked photos and 400 UTKFace faces as they are, in black and
   white, four times darker and blurred (the team's data in ../shared/data; skipped without it),
   and counts the faces the rule drops, with the largest two-tone share seen.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import random
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from realtime.face_detector import (  # noqa: E402  (after the repo is on the path)
    FLAT_MAX_SCORE,
    FLAT_SHARE,
    FaceDetector,
    StillImageDetector,
    two_tone_share,
)
from realtime.machine import cpu_info  # noqa: E402
from realtime.sources import read_image  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CHROMIUM = Path("/usr/bin/chromium")
GRAB = """async () => {
  const s = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480}});
  const v = document.createElement('video'); v.srcObject = s; v.muted = true; await v.play();
  const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d'); const out = [];
  for (let i = 0; i < 120; i++) { g.drawImage(v, 0, 0); out.push(c.toDataURL('image/png'));
    await new Promise(r => setTimeout(r, 50)); }
  return out; }"""


def fake_camera_frames(work: Path) -> list[np.ndarray]:
    """Frames of Chromium's fake camera, through a page on a local server (getUserMedia needs a
    secure context: localhost)."""
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from playwright import sync_api

    (work / "index.html").write_text("<html><body></body></html>")
    handler = type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    server = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(work)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_api.sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(work / "profile"), executable_path=str(CHROMIUM), headless=True,
                args=["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"])
            try:
                page = context.new_page()
                page.goto(f"http://localhost:{server.server_address[1]}/index.html")
                urls = page.evaluate(GRAB)
            finally:
                context.close()
    finally:
        server.shutdown()
    return [cv2.imdecode(np.frombuffer(base64.b64decode(u.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
            for u in urls]


def camera_check(frames: list[np.ndarray]) -> dict[str, object]:
    out: dict[str, object] = {"frames": len(frames)}
    for name in ("short", "full"):
        counts = {}
        for drop in (False, True):
            with FaceDetector(name, mode="video", drop_flat=drop) as det:
                counts[drop] = sum(bool(det.detect(f, 50 * k)) for k, f in enumerate(frames))
        with FaceDetector(name, mode="video", min_score=0.05, drop_flat=False) as det:
            top = max((d.score for k, f in enumerate(frames) for d in det.detect(f, 50 * k)), default=0.0)
        out[name] = {"frames_with_a_face": counts[False], "frames_with_a_face_with_rule": counts[True],
                     "max_score": round(top, 3)}
    return out


def real_faces_check(limit: int) -> dict[str, object] | None:
    masked = sorted((SHARED / "masked_faces_unlabeled").glob("*"))
    labels = SHARED / "utkface" / "labels.csv"
    if not masked or not labels.is_file():
        return None
    rows = list(csv.DictReader(labels.open()))
    random.Random(1).shuffle(rows)
    sets: dict[str, list[np.ndarray]] = {"masked (real photos)": []}
    for path in masked:
        image = read_image(path)
        if image is not None:
            sets["masked (real photos)"].append(image)
    for key in ("UTKFace", "UTKFace black and white", "UTKFace 4x darker", "UTKFace blurred"):
        sets[key] = []
    for row in rows[:limit]:
        image = read_image(SHARED / "utkface" / "images" / row["file"])
        if image is None:
            continue
        image = cv2.copyMakeBorder(image, 60, 60, 60, 60, cv2.BORDER_REPLICATE)  # room around the aligned crop
        sets["UTKFace"].append(image)
        sets["UTKFace black and white"].append(cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY),
                                                            cv2.COLOR_GRAY2BGR))
        sets["UTKFace 4x darker"].append((image.astype(np.float32) * 0.25).astype(np.uint8))
        sets["UTKFace blurred"].append(cv2.GaussianBlur(image, (0, 0), 3))
    out = {}
    for key, images in sets.items():
        faces = kept = 0
        share = 0.0
        with StillImageDetector(drop_flat=False) as det:
            for image in images:
                for d in det.detect(image):
                    x, y, w, h = d.box
                    crop = image[max(0, y):y + h, max(0, x):x + w]
                    faces += 1
                    if crop.size:
                        share = max(share, two_tone_share(crop))
        with StillImageDetector() as det:
            for image in images:
                kept += len(det.detect(image))
        out[key] = {"images": len(images), "faces_without_rule": faces, "faces_with_rule": kept,
                    "max_two_tone_share": round(share, 3)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--utk", type=int, default=400, help="UTKFace faces per variant (default 400)")
    args = parser.parse_args()
    report: dict[str, object] = {"machine": cpu_info(), "rule": {"two_tone_share_at_least": FLAT_SHARE,
                                                                 "score_below": FLAT_MAX_SCORE}}
    if CHROMIUM.exists():
        with tempfile.TemporaryDirectory() as tmp:
            report["fake_camera"] = camera_check(fake_camera_frames(Path(tmp)))
    report["real_faces"] = real_faces_check(args.utk)
    text = json.dumps(report, indent=1) + "\n"
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
