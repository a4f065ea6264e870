"""Label faces as female / male in a webcam, a video file, a stream or a folder of images.

Examples:
  face-gender --source 0                                  live webcam window
  face-gender --source clip.mp4 --output out.mp4 --jsonl out.jsonl --no-display
  face-gender --source photos/ --output labelled/         annotated copies + contact sheet
  face-gender --source http://cam.local:8080/video        MJPEG/RTSP, reconnects when it drops
  face-gender --source picam                              Raspberry Pi camera (picamera2)
  face-gender --source picam --no-display --serve 0.0.0.0:8080
                                                  headless Pi: watch from a phone (prints the address)

Exit status: 0 on success, 2 on unusable input (one `error:` line on stderr), 130 on Ctrl-C.
"""

# ruff: noqa: E402  (the imports below come after the SIGINT handler on purpose)
from __future__ import annotations

import os
import signal
import sys


def _exit_while_loading(signum: int, frame: object) -> None:
    os._exit(130)  # nothing is open or written yet: end at once, no traceback


# Ctrl-C while the modules below load (a fraction of a second) ends quietly with 130 instead of a
# KeyboardInterrupt traceback from inside an import; main() gives SIGINT back to Python.
if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "face-gender":
    signal.signal(signal.SIGINT, _exit_while_loading)

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from .cli import (
    Parser,
    add_version,
    frame_size,
    non_negative_float,
    non_negative_int,
    path_arg,
    plural,
    positive_float,
    positive_int,
    prog_name,
    report_user_error,
    setup_logging,
)
from .config import add_pipeline_args, pipeline_kwargs
from .errors import UserError
from .live import DEFAULT_CAPTURES
from .serve import DEFAULT_HOST, DEFAULT_MAX_VIEWERS, MAX_FPS, TOKEN_ENV, parse_serve, serve_options
from .sources import ReconnectPolicy

if TYPE_CHECKING:
    from .summary import TrackSummary

log = logging.getLogger("realtime")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=prog_name("python -m realtime"), description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    p.add_argument("--source",
                   help="camera index (0), video file, image file, image folder, http/rtsp URL, "
                        "picam, or synthetic[:faces=N,frames=M,size=WxH,fps=F] (required)")
    p.add_argument("--output", type=path_arg,
                   help="annotated video (.mp4) for video sources; a folder for image sources (default: none)")
    p.add_argument("--jsonl", type=path_arg, help="one JSON object per processed frame; - for standard output "
                   "(folders: default OUTPUT/predictions.jsonl)")
    p.add_argument("--no-display", action="store_true", help="do not open a window")
    g = p.add_argument_group("live window and camera")
    g.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=None,
                   help="mirror the window like a selfie view (default: on for cameras, off for files and "
                        "streams); boxes, JSONL and saved images keep the captured orientation")
    g.add_argument("--camera-size", type=frame_size, metavar="WxH",
                   help="ask the camera for this resolution, e.g. 1280x720 (default: the camera's own)")
    g.add_argument("--camera-fps", type=positive_float, metavar="N",
                   help="ask the camera for this frame rate (default: the camera's own)")
    g.add_argument("--list-cameras", action="store_true", help="list the cameras found and their modes, then exit")
    g.add_argument("--snapshots", type=path_arg, default=DEFAULT_CAPTURES, metavar="DIR",
                   help=f"where the window's snapshots (s) and clips (r) go (default {DEFAULT_CAPTURES})")
    g = p.add_argument_group("live view in a browser (a headless Pi, another room)")
    g.add_argument("--serve", type=parse_serve, metavar="[HOST:]PORT",
                   help="serve the annotated live view, FPS and counts at http://HOST:PORT/ while the run "
                        f"goes on (also /stream.mjpg, /frame.jpg, /events); HOST defaults to {DEFAULT_HOST} "
                        "(this machine only); any other address, e.g. 0.0.0.0:8080 for a phone on the same "
                        "network, needs a token, printed with the full address")
    g.add_argument("--serve-token", metavar="TOKEN",
                   help=f"the token viewers must give (default: ${TOKEN_ENV}, else a random one on "
                        "non-loopback addresses)")
    g.add_argument("--serve-max-viewers", type=positive_int, default=DEFAULT_MAX_VIEWERS, metavar="N",
                   help=f"streaming viewers at once; more get HTTP 429 (default {DEFAULT_MAX_VIEWERS})")
    g.add_argument("--serve-fps", type=positive_float, default=MAX_FPS, metavar="N",
                   help=f"frames and events a second sent to viewers, whatever the pipeline's rate: each frame "
                        f"sent is JPEG-encoded once for all viewers (default {MAX_FPS:g})")
    g = p.add_argument_group("privacy")
    add_pipeline_args(g, include=("blur",))
    p.add_argument("--max-frames", type=positive_int, help="stop after N frames")
    add_pipeline_args(p, include=("model",))
    g = p.add_argument_group("detection")
    add_pipeline_args(g, include=("detector", "detector_backend", "min_face_score"))
    g = p.add_argument_group("classification")
    add_pipeline_args(g, include=("threads", "mode", "classify_every_frame", "max_age"))
    g = p.add_argument_group("network streams")
    g.add_argument("--reconnect-tries", type=non_negative_int, default=5, help="reconnect attempts (default 5)")
    g.add_argument("--reconnect-wait", type=non_negative_float, default=1.0,
                   help="first wait in seconds, doubling each try up to 16 (default 1.0)")
    g = p.add_argument_group("output")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--loop", action="store_true", help="restart a video file at its end (soak tests)")
    g.add_argument("--summary", type=Path, metavar="PATH.json",
                   help="at the end, one record per track (label, mean p_female, first/last seen, dwell "
                        "seconds, frames) and distinct tracks by label; a track is a face's continuous "
                        "appearance, not an identity")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    g.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return p


def _list_cameras() -> int:
    from .sources import list_cameras

    cameras = list_cameras()
    if not cameras:
        print("no camera found (tried indices 0-9); plug one in, or check that no other program uses it")
        return 0
    for cam in cameras:
        modes = ", ".join(f"{w}x{h}" + (f" @ {fps:g} fps" if fps else "") for w, h, fps in cam["modes"])
        print(f"camera {cam['index']}: default {cam['default'][0]}x{cam['default'][1]}; grants {modes}")
    return 0


def main(argv: list[str] | None = None) -> int:
    if signal.getsignal(signal.SIGINT) is _exit_while_loading:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before the run's own handling (argument parsing, logging set-up)
        return 130


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if args.list_cameras:
        return _list_cameras()
    if not args.source:
        parser.error("--source is required (or --list-cameras)")
    try:
        from .pipeline import Config, run

        summary = None
        if args.summary is not None:
            from .sinks import check_writable
            from .summary import TrackSummary

            check_writable(args.summary)
            summary = TrackSummary(source=args.source)
        # One image and nothing to write: say what was found, one line per face, on stdout.
        faces_found: list = []
        lines_only = (args.output is None and args.jsonl is None and args.summary is None
                      and Path(args.source).suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp"))

        def observe(frame, faces, annotated, pipeline) -> None:
            if summary is not None:
                summary.observe(frame, faces, annotated, pipeline)
            if lines_only:
                faces_found.extend(faces)

        config = Config(
            **pipeline_kwargs(args),
            source=args.source, output=args.output, jsonl=args.jsonl, summary=args.summary,
            display=not args.no_display,
            max_frames=args.max_frames,
            reconnect=ReconnectPolicy(tries=max(0, args.reconnect_tries), first_wait_s=args.reconnect_wait),
            progress=not args.no_progress and not args.quiet, loop=args.loop,
            observer=observe if (summary is not None or lines_only) else None,
            mirror=args.mirror, captures=args.snapshots,
            camera_size=args.camera_size, camera_fps=args.camera_fps,
            serve=(serve_options(args.serve, args.serve_token, args.serve_max_viewers, args.serve_fps)
                   if args.serve else None),
        )
        try:
            stats = run(config)
        except UserError as exc:  # a run that stopped early keeps what it has, the summary too
            if summary is not None and summary.frames:
                _write_summary(summary, args.summary)
                kept = ", summary" if "; kept " in str(exc) else "; kept summary"
                raise UserError(f"{exc}{kept} {args.summary}") from exc
            raise
        if summary is not None:
            stats.outputs["summary"] = _write_summary(summary, args.summary)
        if lines_only:
            _print_faces(faces_found, args.source)
    except UserError as exc:
        return report_user_error(exc, args.verbose)
    except KeyboardInterrupt:
        from .native import restore_stderr

        restore_stderr()
        print("error: interrupted", file=sys.stderr)
        return 130
    summary = (f"{plural(stats.frames, 'frame')}, {plural(stats.faces, 'face')} in {stats.seconds:.1f} s "
               f"({stats.fps:.1f} FPS)")
    for kind, where in stats.outputs.items():
        summary += f"; {kind}: {where}"
    if stats.skipped:
        summary += f"; skipped {len(stats.skipped)} unreadable file(s)"
    if stats.captures:
        summary += f"; {len(stats.captures)} snapshot(s)/clip(s) in {args.snapshots}"
    log.info(summary)
    return 130 if stats.interrupted else 0


def _print_faces(faces: list, source: str) -> None:
    if not faces:
        print(f"{source}: no face found")
    for k, face in enumerate(faces, 1):
        p = "" if face.p_female is None else f" p_female={face.p_female:.2f}"
        age = "" if face.apparent_age is None else f" apparent_age={face.apparent_age:.1f}"
        reason = f" ({face.reason})" if face.reason else ""
        x, y, w, h = face.box
        print(f"{source}: face {k}: {face.label or 'uncertain'}{reason}{p}{age} box={x},{y},{w},{h}")


def _write_summary(summary: TrackSummary, path: Path) -> str:
    from .summary import write_json_atomic

    result = summary.result()
    write_json_atomic(path, result)
    return f"{path} ({result['distinct_tracks']['total']} tracks)"


if __name__ == "__main__":
    sys.exit(main())
