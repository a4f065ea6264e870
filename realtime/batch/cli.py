"""Annotate many videos: on every core of this machine, or on a Ray cluster.

Examples:
  face-gender-batch --input recordings/ --output annotated/            one worker per core
  face-gender-batch --input "cams/**/*.mp4" --output out/ --no-video  JSONL + summaries only
  face-gender-batch --input list.txt --output out/ --ray local         same task on Ray
  face-gender-batch --input /nfs/videos --output /nfs/out --ray auto   join a running cluster
  face-gender-batch --input recordings/ --output annotated/ --resume    skip finished videos

Each video gets OUTPUT/<relative path without extension>/ with annotated.mp4 (unless --no-video),
faces.jsonl (the JSONL of face-gender), summary.json (per-track summary, see
realtime/summary.py) and thumbnail.jpg (its first annotated frame); OUTPUT/summary.csv,
OUTPUT/summary.json and OUTPUT/report.html (+ report_files/) cover all videos.

Exit status: 0 when every video was annotated, 3 when the batch finished but some videos failed
(each listed with its error in summary.csv/json and the report), 2 on unusable input (one
`error:` line on stderr), 130 when stopped by Ctrl-C, SIGTERM or SIGHUP (one `error:` line; the
workers are stopped and reaped, partial outputs removed: docs/batch.md, "Signals and --resume").
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from ..cli import Parser, add_version, path_arg, positive_int, prog_name, report_user_error, setup_logging
from ..config import PipelineConfig, add_pipeline_args
from ..errors import UserError
from ..paths import GENDER_MODEL
from .driver import BatchOptions, run_batch
from .pool import cores
from .ray_backend import REQUIREMENTS_BATCH, import_ray
from .signals import STOP

log = logging.getLogger("realtime.batch")


def _not_empty(text: str) -> str:
    """``--input ''`` would mean the current folder: refused (say ``.``)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty (use . for the current folder)")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=prog_name("python -m realtime.batch"), description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    p.add_argument("--input", required=True, type=_not_empty, metavar="DIR|GLOB|LIST.txt",
                   help="a folder (searched recursively), a glob pattern (quote it; ** recurses) or a text "
                        "file with one video path per line (relative to the file)")
    p.add_argument("--output", required=True, type=path_arg, metavar="DIR",
                   help="results: OUTPUT/<relative path>/ per video, summary.csv/json, report.html")
    p.add_argument("--workers", type=positive_int,
                   help=f"local worker processes (default: one per core, {cores()} here); with --ray local the "
                        "CPUs Ray may use; with a cluster, the most videos in flight (default: all)")
    p.add_argument("--ray", metavar="auto|local|ADDRESS",
                   help="run each video as a Ray task: local starts Ray on this machine, auto joins the cluster "
                        f"this machine belongs to, HOST:PORT or ray://HOST:PORT joins that one (needs "
                        f"pip install -r {REQUIREMENTS_BATCH})")
    p.add_argument("--no-video", action="store_true", help="no annotated videos: JSONL, summaries and report only")
    p.add_argument("--resume", action="store_true",
                   help="skip videos whose outputs are complete (after an interrupted or partly failed batch)")
    p.add_argument("--no-report", action="store_true", help="no report.html and plots")
    g = p.add_argument_group("per video (as in face-gender)")
    add_pipeline_args(g, threads=1, model_default=None,
                      model_help=f"gender model .tflite, metadata .json beside it, at this path on every node "
                                 f"(default: the {GENDER_MODEL.name} each worker's installation ships)",
                      detector_help="auto (= full for files), short, full, or a .tflite path",
                      threads_help="classifier and detector threads in each worker (default 1: one worker per core)")
    g.add_argument("--max-frames", type=positive_int, help="at most N frames of each video")
    g = p.add_argument_group("output")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    g.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return p


def options_from_args(args: argparse.Namespace) -> BatchOptions:
    pipeline = PipelineConfig.from_args(args, detector_threads=args.threads)  # (--threads: each worker's both)
    if args.model is not None:
        pipeline = replace(pipeline, model=args.model.expanduser().resolve())
    return BatchOptions(input=args.input, output=args.output, workers=args.workers, ray=args.ray,
                        video=not args.no_video, resume=args.resume, report=not args.no_report,
                        progress=not args.no_progress and not args.quiet, pipeline=pipeline,
                        max_frames=args.max_frames, shipped_model=args.model is None)


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 all annotated, 3 some failed, 2 unusable input, 130 stopped by SIGINT
    (Ctrl-C), SIGTERM or SIGHUP."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    STOP.install()
    try:
        if args.ray:
            import_ray()  # a missing Ray is bad input: say so before any work
        aggregate, status = run_batch(options_from_args(args))
    except UserError as exc:
        if STOP.signum is not None:  # a write failing under a stop signal: the signal is the news
            return _interrupted()
        return report_user_error(exc, args.verbose)
    except KeyboardInterrupt:
        return _interrupted()
    t = aggregate["totals"]
    log.info("%d videos, %d frames in %.1f s: %d annotated%s, %d failed; %s", t["videos"], t["frames"],
             t["seconds"], t["ok"], f" ({t['resumed']} already done)" if t["resumed"] else "", t["failed"],
             Path(args.output) / ("report.html" if not args.no_report else "summary.csv"))
    return status


def _interrupted() -> int:
    with STOP.deferred():
        print(f"error: interrupted ({STOP.name()}); finished videos are complete (use --resume to go on)",
              file=sys.stderr)
    return 130
