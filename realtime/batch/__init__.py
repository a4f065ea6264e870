"""``face-gender-batch``: annotate many videos on every core of this machine, or on a Ray cluster
(usage: :mod:`realtime.batch.cli`; docs/batch.md).

One module per concern:

* :mod:`~realtime.batch.inputs`: the videos a folder, a glob or a list file names, and the output
  folder of each;
* :mod:`~realtime.batch.task`: the unit of work, one video (:func:`process_video`);
* :mod:`~realtime.batch.signals`: Ctrl-C, SIGTERM and SIGHUP;
* :mod:`~realtime.batch.pool`: the local pool of spawned worker processes;
* :mod:`~realtime.batch.ray_backend`: the same tasks on Ray;
* :mod:`~realtime.batch.state`: what ``--resume`` may trust of a previous run;
* :mod:`~realtime.batch.outputs`: how OUTPUT is written (and cleaned up after an interruption);
* :mod:`~realtime.batch.driver`: :func:`run_batch`, from the inputs to the aggregate;
* :mod:`~realtime.batch.report`: OUTPUT/report.html;
* :mod:`~realtime.batch.cli`: the command line (:func:`main`).
"""

from __future__ import annotations

from .cli import build_parser, main, options_from_args
from .driver import EXIT_SOME_FAILED, BatchOptions, run_batch
from .inputs import (
    JSONL_NAME,
    RESERVED,
    SUMMARY_NAME,
    THUMB_NAME,
    VIDEO_EXTENSIONS,
    VIDEO_NAME,
    VideoInput,
    collect_inputs,
    output_folders,
)
from .outputs import write_aggregate
from .pool import LocalPool
from .state import completed_entry, summary_problem
from .task import VideoResult, VideoTask, check_pipeline, process_video

__all__ = [
    "EXIT_SOME_FAILED", "JSONL_NAME", "RESERVED", "SUMMARY_NAME", "THUMB_NAME", "VIDEO_EXTENSIONS", "VIDEO_NAME",
    "BatchOptions", "LocalPool", "VideoInput", "VideoResult", "VideoTask", "build_parser", "check_pipeline",
    "collect_inputs", "completed_entry", "main", "options_from_args", "output_folders", "process_video",
    "run_batch", "summary_problem", "write_aggregate",
]
