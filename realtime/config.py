"""The pipeline's options, defined once: :class:`PipelineConfig` and the command-line flags that fill it.

Every front end (``face-gender``, ``face-gender-batch``, ``face-gender-web``, ``training evaluate``,
``scripts/benchmark.py``) declares its pipeline flags with :func:`add_pipeline_args` (choosing which
ones it offers, and its own defaults where it needs them) and builds its config with
:meth:`PipelineConfig.from_args`, so a flag has one name, one help text and one validator.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from .cli import path_arg, positive_float, positive_int, unit_float
from .detection import BACKENDS, Backend
from .paths import GENDER_MODEL

RunMode = Literal["auto", "sync", "async"]  # auto: background classification for live sources


@dataclass(kw_only=True)
class PipelineConfig:
    """What builds a pipeline (``realtime.pipeline.build_pipeline``): the models, the detector, the
    cache policy, and whether faces are blurred. ``privacy`` implies ``blur`` (resolved here, once)."""

    model: Path = GENDER_MODEL
    detector: str = "auto"  # auto | short | full | PATH
    detector_backend: Backend = "auto"  # where BlazeFace runs (realtime.face_detector)
    min_face_score: float = 0.5
    threads: int = 2
    detector_threads: int = 2  # video detector's LiteRT threads (the batch driver runs 1 per worker process)
    mode: RunMode = "auto"
    classify_every_frame: bool = False
    max_age_s: float = 2.0
    blur: bool = False  # blur every face region in everything shown and written
    privacy: bool = False  # blur, and JSONL without boxes or detector scores

    def __post_init__(self) -> None:
        if self.privacy:
            self.blur = True

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides: Any) -> PipelineConfig:
        """A config from the flags :func:`add_pipeline_args` added (others keep their defaults)."""
        return cls(**pipeline_kwargs(args), **overrides)


MAX_THREADS_PER_CORE = 4


def _threads(text: str) -> int:
    """Interpreter threads: at least 1, at most 4 per core (more only thrash, and very large
    numbers crash the native library)."""
    import os

    value = positive_int(text)
    limit = MAX_THREADS_PER_CORE * (os.cpu_count() or 1)
    if value > limit:
        raise argparse.ArgumentTypeError(f"at most {limit} ({MAX_THREADS_PER_CORE} per core), got {value}")
    return value


OPTIONS = ("model", "detector", "detector_backend", "min_face_score", "threads", "mode",
           "classify_every_frame", "max_age", "blur")


def add_pipeline_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *,
                      include: tuple[str, ...] = OPTIONS, threads: int = 2, model_default: Path | None = GENDER_MODEL,
                      model_help: str | None = None, detector_help: str | None = None,
                      threads_help: str | None = None) -> None:
    """Add the pipeline flags named in ``include`` (see :data:`OPTIONS`) to ``parser``. A front end
    with other needs passes its own default thread count, model default (None: the model each
    worker's installation ships) or help text, never its own flag."""
    unknown = set(include) - set(OPTIONS)
    if unknown:
        raise ValueError(f"unknown pipeline options {sorted(unknown)}")
    if "model" in include:
        parser.add_argument("--model", type=path_arg, default=model_default,
                            help=model_help or f"gender model .tflite, metadata .json beside it (default "
                                               f"{GENDER_MODEL.name})")
    if "detector" in include:
        parser.add_argument("--detector", default="auto",
                            help=detector_help or "auto (short-range for cameras, full-range for files and "
                                                  "streams, both for images), short, full, or a .tflite path")
    if "detector_backend" in include:
        parser.add_argument("--detector-backend", choices=BACKENDS, default="auto",
                            help="run BlazeFace on litert (LiteRT interpreter: fastest, runs on every Raspberry "
                                 "Pi) or mediapipe (MediaPipe Tasks; not on CPUs without ARMv8.1 atomics such as "
                                 "the Pi 4); auto = litert (default auto)")
    if "min_face_score" in include:
        parser.add_argument("--min-face-score", type=unit_float, default=0.5,
                            help="minimum detector confidence (default 0.5)")
    if "threads" in include:
        parser.add_argument("--threads", type=_threads, default=threads,
                            help=threads_help or f"interpreter threads (default {threads}; at most "
                                                 f"{MAX_THREADS_PER_CORE} per core)")
    if "mode" in include:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--sync", dest="mode", action="store_const", const="sync",
                          help="classify in the main loop: deterministic (default for files)")
        mode.add_argument("--async", dest="mode", action="store_const", const="async",
                          help="classify in a background thread: the display never waits (default live)")
        parser.set_defaults(mode="auto")
    if "classify_every_frame" in include:
        parser.add_argument("--classify-every-frame", action="store_true",
                            help="no per-track cache: classify every face on every frame")
    if "max_age" in include:
        parser.add_argument("--max-age", type=positive_float, default=2.0, metavar="SECONDS",
                            help="re-classify a tracked face after this long (default 2.0)")
    if "blur" in include:
        parser.add_argument("--blur", action="store_true",
                            help="blur every face (with a margin) in everything shown and written: window, video, "
                                 "images, snapshots, contact sheet, served frames; labels stay")
        parser.add_argument("--privacy", action="store_true",
                            help="--blur, and JSONL without boxes or detector scores (track ids, labels, "
                                 "probabilities and times only)")


_FIELD_OF = {"max_age": "max_age_s"}


def pipeline_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`PipelineConfig` fields set by the flags present in ``args``."""
    names = {f.name for f in fields(PipelineConfig)}
    out: dict[str, Any] = {}
    for key, value in vars(args).items():
        name = _FIELD_OF.get(key, key)
        if name in names and key in (*OPTIONS, "privacy") and not (key == "model" and value is None):
            out[name] = value
    return out
