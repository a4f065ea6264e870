"""Label faces as female / male in a webcam, a video file, a stream or a folder of images.

Examples:
  python -m realtime --source 0                                  live webcam window
  python -m realtime --source clip.mp4 --output out.mp4 --jsonl out.jsonl --no-display
  python -m realtime --source photos/ --output labelled/         annotated copies + contact sheet
  python -m realtime --source http://cam.local:8080/video        MJPEG/RTSP, reconnects when it drops
  python -m realtime --source picam                              Raspberry Pi camera (picamera2)

Exit status: 0 on success, 2 on unusable input (one `error:` line on stderr), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .cli import add_version, positive_int, prog_name, setup_logging, unit_float
from .detection import BACKENDS
from .errors import UserError
from .paths import GENDER_MODEL
from .sources import ReconnectPolicy

log = logging.getLogger("realtime")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name("python -m realtime"), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    p.add_argument("--source", required=True,
                   help="camera index (0), video file, image file, image folder, http/rtsp URL, "
                        "picam, or synthetic[:faces=N,frames=M]")
    p.add_argument("--output", type=Path,
                   help="annotated video (.mp4) for video sources; a folder for image sources")
    p.add_argument("--jsonl", type=Path, help="one JSON object per processed frame "
                   "(folders: default OUTPUT/predictions.jsonl)")
    p.add_argument("--no-display", action="store_true", help="do not open a window")
    p.add_argument("--max-frames", type=positive_int, help="stop after N frames")
    p.add_argument("--model", type=Path, default=GENDER_MODEL,
                   help=f"gender model .tflite, metadata .json beside it (default {GENDER_MODEL.name})")
    g = p.add_argument_group("detection")
    g.add_argument("--detector", default="auto",
                   help="auto (short-range for cameras, full-range for files/streams, both for "
                        "images), short, full, or a .tflite path")
    g.add_argument("--detector-backend", choices=BACKENDS, default="auto",
                   help="run BlazeFace on litert (LiteRT interpreter: fastest, runs on every Raspberry "
                        "Pi) or mediapipe (MediaPipe Tasks; not on CPUs without ARMv8.1 atomics such as "
                        "the Pi 4); auto = litert (default auto)")
    g.add_argument("--min-face-score", type=unit_float, default=0.5,
                   help="minimum detector confidence (default 0.5)")
    g = p.add_argument_group("classification")
    g.add_argument("--threads", type=positive_int, default=2, help="interpreter threads (default 2)")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--sync", dest="mode", action="store_const", const="sync",
                      help="classify in the main loop: deterministic (default for files)")
    mode.add_argument("--async", dest="mode", action="store_const", const="async",
                      help="classify in a background thread: the display never waits (default live)")
    g.add_argument("--classify-every-frame", action="store_true",
                   help="no per-track cache: classify every face on every frame")
    g.add_argument("--max-age", type=float, default=2.0, metavar="SECONDS",
                   help="re-classify a tracked face after this long (default 2.0)")
    g = p.add_argument_group("network streams")
    g.add_argument("--reconnect-tries", type=int, default=5, help="reconnect attempts (default 5)")
    g.add_argument("--reconnect-wait", type=float, default=1.0,
                   help="first wait in seconds, doubling each try up to 16 (default 1.0)")
    g = p.add_argument_group("output")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--loop", action="store_true", help="restart a video file at its end (soak tests)")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    g.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    p.set_defaults(mode="auto")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        from .pipeline import Config, run

        config = Config(
            source=args.source, output=args.output, jsonl=args.jsonl, display=not args.no_display,
            max_frames=args.max_frames, model=args.model, detector=args.detector,
            detector_backend=args.detector_backend, min_face_score=args.min_face_score,
            threads=args.threads, mode=args.mode,
            classify_every_frame=args.classify_every_frame, max_age_s=args.max_age,
            reconnect=ReconnectPolicy(tries=max(0, args.reconnect_tries), first_wait_s=args.reconnect_wait),
            progress=not args.no_progress and not args.quiet, loop=args.loop,
        )
        stats = run(config)
    except UserError as exc:
        if args.verbose:
            log.exception("failed")
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    summary = f"{stats.frames} frames, {stats.faces} faces in {stats.seconds:.1f} s ({stats.fps:.1f} FPS)"
    for kind, where in stats.outputs.items():
        summary += f"; {kind}: {where}"
    if stats.skipped:
        summary += f"; skipped {len(stats.skipped)} unreadable file(s)"
    log.info(summary)
    return 130 if stats.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
