#!/usr/bin/env python3
"""The README's picture of the live window: exactly what the window shows (its picture, boxes,
labels and status panel; no desktop around it), on the bundled demo clip.

    python scripts/live_window_picture.py --out docs/images/live_window.png

Runs the clip through the same pipeline and ``LiveWindow`` as ``face-gender --source 0`` (the
window's screen is a function that keeps the image it would show), and saves the frame with the
most labelled faces among the second half of the clip (tracks settled).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from realtime.config import PipelineConfig  # noqa: E402  (after the repo is on the path)
from realtime.live import LiveWindow  # noqa: E402
from realtime.paths import DEMO_CLIP  # noqa: E402
from realtime.pipeline import build_pipeline  # noqa: E402
from realtime.sources import VideoFileSource  # noqa: E402

log = logging.getLogger("live_window_picture")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "live_window.png")
    parser.add_argument("--source", type=Path, default=DEMO_CLIP)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    shown: list[tuple[int, np.ndarray]] = []
    with VideoFileSource(args.source) as source:
        pipeline = build_pipeline(PipelineConfig(), source)
        window = LiveWindow(fps=source.fps, keys=lambda delay_ms: 255,
                            screen=lambda image: shown.append((len(faces), image)) or True)
        total = source.total or 0
        try:
            for frame in source.frames():
                faces = pipeline.process(frame)
                picture, annotated = pipeline.draw(frame, faces)
                window.show(picture, faces, annotated, None)  # no FPS reading: this run measures nothing
        finally:
            pipeline.close()
    second_half = shown[total // 2:] or shown
    best = max(range(len(second_half)), key=lambda k: second_half[k][0])
    n, image = second_half[best]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), image)
    log.info("wrote %s (%dx%d, %d faces)", args.out, image.shape[1], image.shape[0], n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
