"""The unit of work: one video (:func:`process_video`, what every worker runs, local or on Ray),
and the check that this process can run it at all (:func:`check_pipeline`)."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import PipelineConfig
from ..errors import UserError
from ..paths import GENDER_MODEL
from .inputs import VIDEO_NAME

if TYPE_CHECKING:
    from ..classifier import GenderClassifier

log = logging.getLogger("realtime.batch")

THUMB_WIDTH = 480


@dataclass
class VideoTask:
    index: int
    path: str
    rel: str
    out_dir: str  # where the worker writes the annotated video (unless video is False)
    video: bool
    pipeline: PipelineConfig  # every video's pipeline options (--model, --sync, --threads, ...)
    max_frames: int | None = None
    shipped_model: bool = False  # no --model: the model this worker's installation ships (config_here)


def config_here(pipeline: PipelineConfig, shipped_model: bool) -> PipelineConfig:
    """The batch's pipeline options as this process runs them: without ``--model`` (``shipped_model``),
    the model that this process's installation ships, not the driver's path (a cluster's nodes
    need not install the package at the same path); else the model given, at that path."""
    return replace(pipeline, model=GENDER_MODEL) if shipped_model else pipeline


@dataclass
class VideoResult:
    index: int
    rel: str
    status: str  # ok | failed | interrupted
    error: str | None = None
    frames: int = 0
    seconds: float = 0.0
    worker: str = ""
    summary: dict[str, Any] | None = None
    jsonl: bytes = b""
    thumbnail: bytes | None = None
    video: bool = False  # the annotated video is at OUTPUT/<folder>/annotated.mp4


_classifiers: dict[tuple[str, int], GenderClassifier] = {}  # this process's, by (model, threads)
_classifiers_lock = threading.Lock()


def worker_classifier(config: PipelineConfig) -> GenderClassifier:
    """The classifier of every video this process annotates: loaded for its first video, kept for
    the others (a local worker process, or a Ray worker process, which Ray reuses for many tasks).
    A classifier is thread-safe, and it is ``config.model`` (what ``realtime.pipeline.run`` needs)."""
    key = (str(config.model), config.threads)
    with _classifiers_lock:
        classifier = _classifiers.get(key)
        if classifier is None:
            from ..classifier import GenderClassifier

            classifier = _classifiers[key] = GenderClassifier(config.model, num_threads=config.threads)
            log.debug("worker %d: loaded %s (%d threads) for its videos", os.getpid(), Path(config.model).name,
                      config.threads)
    return classifier


def process_video(task: VideoTask, progress: Callable[[int], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> VideoResult:
    """Annotate one video (what each worker runs, local or on Ray). The JSONL, summary and thumbnail
    come back in the result for the driver to write (the JSONL is built in memory: no face data
    is written anywhere else); only the annotated video is written here, in its output folder
    under a temporary name, renamed when complete. ``should_stop()`` true: the video stops as at
    Ctrl-C (checked every frame; status ``interrupted``). The model is loaded once per process
    (:func:`worker_classifier`); the detector, whose video mode keeps state, once per video."""
    import cv2

    from ..pipeline import Config, frame_record, run
    from ..summary import TrackSummary

    started = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    result = VideoResult(task.index, task.rel, "failed", worker=worker)
    summary = TrackSummary(source=task.rel)
    thumb: list[bytes] = []
    lines: list[str] = []
    pipeline = config_here(task.pipeline, task.shipped_model)
    privacy = pipeline.privacy

    def observe(frame: Any, faces: Any, annotated: Any, pipeline: Any) -> None:
        summary.observe(frame, faces, annotated, pipeline)
        # the bytes realtime.sinks.JsonlSink writes
        lines.append(json.dumps(frame_record(frame, faces, privacy=privacy), separators=(", ", ": ")) + "\n")
        if not thumb:
            h, w = annotated.shape[:2]
            small = annotated if w <= THUMB_WIDTH else cv2.resize(
                annotated, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 85])
            if ok:
                thumb.append(buf.tobytes())

    last = [time.perf_counter(), 0]

    def on_frame(done: int, total: int | None) -> None:
        if should_stop is not None and should_stop():
            raise KeyboardInterrupt  # run() stops as at Ctrl-C: nothing half-written is kept
        now = time.perf_counter()
        if progress is not None and now - last[0] >= 0.2:
            progress(done - last[1])
            last[0], last[1] = now, done

    out_dir = Path(task.out_dir)
    final_video = out_dir / VIDEO_NAME
    tmp_video = out_dir / f".{final_video.stem}.partial-batch-{os.getpid()}{final_video.suffix}"
    config = Config(source=task.path, output=tmp_video if task.video else None, jsonl=None, display=False,
                    progress=False, observer=observe, max_frames=task.max_frames, **vars(pipeline))
    try:
        if should_stop is not None and should_stop():
            raise KeyboardInterrupt
        stats = run(config, on_frame=on_frame, classifier=worker_classifier(pipeline))
    except UserError as exc:
        result.error = str(exc.__cause__ or exc)  # without "kept ..." (nothing is kept)
    except KeyboardInterrupt:
        result.status = "interrupted"
    except Exception as exc:  # a bug, or a library failing on odd input: the batch goes on
        log.debug("%s failed", task.rel, exc_info=True)
        result.error = f"internal error: {type(exc).__name__}: {exc}"
    else:
        if stats.interrupted:
            result.status = "interrupted"
        else:
            try:
                if task.video and tmp_video.exists():
                    os.replace(tmp_video, final_video)
                    result.video = True
            except OSError as exc:
                result.error = f"cannot write {final_video}: {exc.strerror or exc}"
            else:
                result.status = "ok"
                result.frames = stats.frames
                result.jsonl = "".join(lines).encode("utf-8")
                result.summary = summary.result()
                result.thumbnail = thumb[0] if thumb else None
    finally:
        if progress is not None and summary.frames > last[1]:
            progress(summary.frames - last[1])
        tmp_video.unlink(missing_ok=True)
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def check_pipeline(config: PipelineConfig, keep: bool = False) -> None:
    """Load the model and the face detector once with the batch's options, before any video (on
    this machine; on a cluster, on each node): a missing or bad model, bad metadata, an unknown
    detector or backend is bad input (exit 2), not a failure of every video. ``keep``: the model
    loaded stays this process's for its videos (:func:`worker_classifier`; a Ray node's check runs
    in a worker process that Ray reuses for video tasks); else it is dropped (the driver)."""
    from ..classifier import GenderClassifier
    from ..native import quiet_stderr

    model = Path(config.model)
    if not model.is_file():
        raise UserError(f"model not found: {model}")
    detector = str(config.detector or "auto")
    name = "full" if detector == "auto" else detector  # what "auto" is for video files
    with quiet_stderr():  # LiteRT's start-up notes
        try:
            if keep:
                worker_classifier(config)
            else:
                GenderClassifier(model, num_threads=1)
        except UserError:
            raise
        except Exception as exc:  # a file that is not a model: LiteRT's ValueError, RuntimeError...
            raise UserError(f"cannot load the model {model}: {type(exc).__name__}: {exc}") from exc
        from ..face_detector import FaceDetector

        try:
            FaceDetector(name, mode="video", min_score=float(config.min_face_score),
                         backend=str(config.detector_backend or "auto"), num_threads=1).close()
        except UserError as exc:
            raise UserError(f"--detector {detector}: {exc} (auto, short, full or a .tflite path)") from exc
        except Exception as exc:
            raise UserError(f"--detector {detector}: cannot load it: {type(exc).__name__}: {exc}") from exc

