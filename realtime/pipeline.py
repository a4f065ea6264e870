"""source → detect → track → classify → draw → sinks.

:class:`FacePipeline` turns one frame into labelled faces (used by the CLI, the web app and the
benchmark); :func:`run` drives a whole source through it into the sinks and the window.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from tqdm import tqdm

from .classifier import GenderClassifier
from .config import PipelineConfig
from .errors import SourceError, UserError
from .face import APPARENT_AGE, P_FEMALE, Face, frame_record
from .face_detector import Detection, FaceDetector, StillImageDetector
from .interrupt import CtrlC
from .live import DEFAULT_CAPTURES, LiveWindow
from .native import restore_stderr
from .overlay import draw_faces
from .sinks import OutputError, RunOutputs, check_run_outputs
from .sources import Frame, ReconnectPolicy, Source, open_source
from .tracker import CachePolicy, Track, Tracker
from .worker import ClassifierWorker

if TYPE_CHECKING:
    from .serve import ServeOptions

log = logging.getLogger(__name__)

DETECT_MAX_SIDE = 1280  # larger frames are detected on a downscaled copy (boxes scaled back)


@dataclass(kw_only=True)
class Config(PipelineConfig):
    """What drives a run (:func:`run`): the source, the outputs, the window; plus the pipeline's."""

    source: str
    output: Path | None = None
    jsonl: Path | None = None
    display: bool = True
    max_frames: int | None = None
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    progress: bool = True
    contact_sheet: bool = True
    loop: bool = False  # restart a file source at its end (soak tests)
    video_codec: str = "mp4v"  # fourcc of --output videos; the web app writes VP80 (.webm) for browsers
    mirror: bool | None = None  # mirror the window (selfie view); None: on for cameras, off otherwise
    captures: Path = DEFAULT_CAPTURES  # where the window's snapshots and clips go
    camera_size: tuple[int, int] | None = None  # ask the camera for this mode (it grants the closest)
    camera_fps: float | None = None
    serve: ServeOptions | None = None  # --serve: the live view over HTTP (realtime.serve)
    # Written by the caller (realtime.summary via the observer); named here so that every output of
    # the run is checked against the inputs and the other outputs together, before any work.
    summary: Path | None = None
    # Called with (frame, faces, annotated image, pipeline) once a frame is in every output (a frame
    # is in the outputs and the observer, or in neither): the per-track summary (realtime.summary).
    observer: Callable[[Frame, list[Face], np.ndarray, FacePipeline], None] | None = None


@dataclass
class Timing:
    """Per-stage milliseconds, summed over frames."""

    ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("decode", "detect", "classify", "draw", "write"), 0.0))
    frames: int = 0
    faces: int = 0
    classified: int = 0

    def add(self, stage: str, seconds: float) -> None:
        self.ms[stage] = self.ms.get(stage, 0.0) + seconds * 1000.0

    def per_frame(self) -> dict[str, float]:
        n = max(1, self.frames)
        out = {k: round(v / n, 3) for k, v in self.ms.items()}
        out["total"] = round(sum(self.ms.values()) / n, 3)
        return out


def choose_detector(name: str, source: Source) -> str:
    """``auto``: short-range for selfie-distance cameras, full-range for everything else."""
    if name != "auto":
        return name
    return "short" if source.close_range else "full"


class FacePipeline:
    """Detect, track and classify faces frame by frame."""

    def __init__(self, detector: FaceDetector | StillImageDetector, classifier: GenderClassifier,
                 policy: CachePolicy | None = None, asynchronous: bool = False,
                 tracker: Tracker | None = None, blur: bool = False) -> None:
        self.detector = detector
        self.classifier = classifier
        self.policy = policy or CachePolicy()
        self.tracker = tracker or Tracker()
        self.worker = ClassifierWorker(classifier.predict) if asynchronous else None
        self.timing = Timing()
        self.blur = blur  # anonymise face regions in everything drawn (--blur / --privacy): fixed for a pipeline

    # -- stages -----------------------------------------------------------------------------
    def detect(self, frame: Frame) -> list[Detection]:
        image = frame.detect_image if frame.detect_image is not None else frame.image
        scale = 1.0
        if max(image.shape[:2]) > DETECT_MAX_SIDE:
            scale = DETECT_MAX_SIDE / max(image.shape[:2])
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if frame.detect_image is not None:
            scale = image.shape[1] / frame.image.shape[1]
        faces = self.detector.detect(image, int(frame.time_s * 1000))
        if scale != 1.0:
            faces = [_scale_detection(f, 1.0 / scale, frame.image.shape) for f in faces]
        return faces

    def process(self, frame: Frame) -> list[Face]:
        t0 = time.perf_counter()
        faces = self.detect(frame)
        t1 = time.perf_counter()
        self.timing.add("detect", t1 - t0)
        tracks = self.tracker.update([f.box for f in faces], [f.score for f in faces], frame.time_s,
                                     [f.crop_box for f in faces])
        if self.worker is not None:
            for res in self.worker.poll():
                self.tracker.add_result(res.track_id, res.values, res.frame_time_s)
        todo = [t for t in tracks if self.policy.needs(t, frame.time_s)]
        if todo:
            crops = self.classifier.crops(frame.image, [t.crop_box for t in todo])
            if self.worker is None:
                values = self.classifier.predict(crops)
                for k, t in enumerate(todo):
                    self.tracker.add_result(t.track_id, {name: float(v[k]) for name, v in values.items()},
                                            frame.time_s)
                self.timing.classified += len(todo)
            elif self.worker.submit([t.track_id for t in todo], crops, frame.time_s):
                for t in todo:
                    t.pending = True
                self.timing.classified += len(todo)
        self.timing.add("classify", time.perf_counter() - t1)
        self.timing.frames += 1
        self.timing.faces += len(tracks)
        return [self._face(t) for t in tracks]

    def _face(self, track: Track) -> Face:
        """The face record of a track now (a snapshot: the tracker goes on changing the track)."""
        outputs = dict(track.scores)
        label, reason = (None, None)
        if P_FEMALE in outputs:
            label, reason = self.classifier.decide(outputs[P_FEMALE], outputs.get(APPARENT_AGE))
        return Face(track.box, label, outputs, track.track_id, track.detector_score, track.crop_box or track.box,
                    reason)

    def draw(self, frame: Frame, faces: list[Face], fps: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(picture, annotated)``: the frame as every output shows it (with ``blur``, its face
        regions anonymised, once) and a copy of that with boxes, labels and the FPS. The window and
        the contact sheet draw on the same picture, so nothing is blurred twice."""
        t0 = time.perf_counter()
        picture = frame.image
        if self.blur:
            from .privacy import blur_faces

            picture = blur_faces(frame.image, [f.box for f in faces])
        annotated = draw_faces(picture, faces, fps)
        self.timing.add("draw", time.perf_counter() - t0)
        return picture, annotated

    def annotate(self, frame: Frame, faces: list[Face], fps: float | None = None) -> np.ndarray:
        """The annotated image alone (:meth:`draw`)."""
        return self.draw(frame, faces, fps)[1]

    def new_source_item(self) -> None:
        """Forget tracks between unrelated images (folders)."""
        self.tracker.reset()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
        self.detector.close()


def _scale_detection(det: Detection, k: float, shape: tuple[int, ...]) -> Detection:
    h, w = shape[:2]

    def sc(b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        return tuple(int(round(v * k)) for v in b)  # type: ignore[return-value]

    x, y, bw, bh = sc(det.box)
    box = (min(x, w - 1), min(y, h - 1), max(1, min(bw, w - x)), max(1, min(bh, h - y)))
    return Detection(box, det.score, tuple((px * k, py * k) for px, py in det.keypoints), sc(det.crop_box))


def build_pipeline(config: PipelineConfig, source: Source, classifier: GenderClassifier | None = None
                   ) -> FacePipeline:
    """Detector, classifier and cache policy for a source with these traits (it need not be
    opened: the web app describes its uploads and webcam this way). ``classifier``: one already
    loaded to share (the web app's one per process, a batch worker's one for all its videos);
    it must be ``config.model``."""
    if classifier is None:
        classifier = GenderClassifier(config.model, num_threads=config.threads)
    stills = source.still
    name = choose_detector(config.detector, source)
    if stills and config.detector == "auto":
        detector: FaceDetector | StillImageDetector = StillImageDetector(config.min_face_score,
                                                                         backend=config.detector_backend)
    else:
        detector = FaceDetector(name, mode="image" if stills else "video", min_score=config.min_face_score,
                                backend=config.detector_backend, num_threads=config.detector_threads)
    asynchronous = config.mode == "async" or (config.mode == "auto" and source.live)
    policy = CachePolicy(every_frame=config.classify_every_frame, max_age_s=config.max_age_s)
    log.info("detector %s on %s, classifier %s (%d px, %s), %s classification", name if not stills or
             config.detector != "auto" else "short+full (stills)", detector.backend, Path(config.model).name,
             classifier.input_size, classifier.input_dtype.name, "background" if asynchronous else "in-line")
    return FacePipeline(detector, classifier, policy, asynchronous, blur=config.blur)  # privacy => blur (config)


# --- the run loop --------------------------------------------------------------------------------
@dataclass
class RunStats:
    frames: int = 0
    faces: int = 0
    seconds: float = 0.0
    first_frame_s: float | None = None
    classified: int = 0  # faces classified (async: submitted to the worker)
    interrupted: bool = False
    outputs: dict[str, str] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    captures: list[str] = field(default_factory=list)  # snapshots and clips taken in the window

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def _live_window(config: Config, source: Source) -> LiveWindow | None:
    if not config.display:
        return None
    if not _has_display():
        log.warning("no display available; running without a window (use --no-display to silence)")
        return None
    mirror = source.close_range if config.mirror is None else config.mirror
    return LiveWindow(mirror=mirror, captures=config.captures, fps=source.fps)


def _has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class _Fps:
    def __init__(self, window: int = 30) -> None:
        self.times: deque[float] = deque(maxlen=window)

    def tick(self) -> float | None:
        self.times.append(time.perf_counter())
        if len(self.times) < 2:
            return None
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


def _timed_frames(source: Source, timing: Timing, loop: bool) -> Iterator[Frame]:
    offset = 0
    while True:
        it = iter(source.frames())
        last = None
        while True:
            t0 = time.perf_counter()
            try:
                frame = next(it)
            except StopIteration:
                break
            timing.add("decode", time.perf_counter() - t0)
            if offset:
                frame = Frame(frame.index + offset, frame.time_s + offset / source.fps, frame.image,
                              frame.name, frame.detect_image)
            last = frame
            yield frame
        if not loop or last is None or source.live:
            return
        offset = last.index + 1
        source.close()
        source.open()


def run(config: Config, on_frame: Callable[[int, int | None], bool | None] | None = None,
        source: Source | None = None, classifier: GenderClassifier | None = None) -> RunStats:
    """Process ``config.source`` to the end (or ``max_frames``/quit/Ctrl-C); returns stats.

    ``on_frame(frames_done, total_or_None)`` is called after each frame (progress for the web app);
    returning ``False`` stops the run as if the window had been closed. ``source``: an already
    opened source to use instead of ``config.source`` (the caller opens and closes it);
    ``classifier``: an already loaded ``config.model`` to share (:func:`build_pipeline`).
    """
    started = time.perf_counter()
    owned = source is None
    if source is None:
        source = open_source(config.source, config.reconnect, config.camera_size, config.camera_fps)
    folder_mode = source.still
    check_run_outputs(config, folder_mode, source)
    stats = RunStats()
    with source if owned else contextlib.nullcontext(source):
        pipeline = build_pipeline(config, source, classifier)
        sinks = RunOutputs(config, source, folder_mode)
        server = None
        if config.serve is not None:
            from .serve import LiveServer

            try:
                server = LiveServer(config.serve)
            except UserError:
                pipeline.close()
                sinks.close(keep=False)
                raise
        window = _live_window(config, source)
        total = source.total if not config.loop else None
        if config.max_frames:
            total = min(total, config.max_frames) if total else config.max_frames
        bar = tqdm(total=total, unit="frame" if not folder_mode else "img", desc=Path(str(source.spec)).name,
                   disable=not config.progress, dynamic_ncols=True)
        fps_meter = _Fps()
        error: UserError | None = None
        write_failed: OutputError | None = None
        ctrl_c = CtrlC()
        try:
            for frame in _timed_frames(source, pipeline.timing, config.loop):
                if folder_mode:
                    pipeline.new_source_item()
                faces = pipeline.process(frame)
                fps = fps_meter.tick()
                picture, annotated = pipeline.draw(frame, faces, fps if source.live else None)
                t0 = time.perf_counter()
                with ctrl_c.deferred():  # a frame is in all outputs or in none
                    sinks.write(frame, faces, picture, annotated, pipeline)
                    if config.observer is not None:
                        config.observer(frame, faces, annotated, pipeline)
                    stats.frames += 1
                    stats.faces += len(faces)
                pipeline.timing.add("write", time.perf_counter() - t0)
                if server is not None:
                    server.hub.publish(annotated, faces, fps, lambda f=frame, fs=faces: frame_record(
                        f, fs, privacy=config.privacy))
                if stats.first_frame_s is None:
                    stats.first_frame_s = time.perf_counter() - started
                bar.update(1)
                if on_frame is not None and on_frame(stats.frames, total) is False:
                    log.info("stopped by the caller after %d frames", stats.frames)
                    break
                if window is not None and not window.show(picture, faces, annotated, fps):
                    log.info("window closed by the user")
                    break
                if config.max_frames and stats.frames >= config.max_frames:
                    break
        except KeyboardInterrupt:
            stats.interrupted = True
            restore_stderr()  # an interrupt inside a quiet_stderr block's set-up must not silence the end
        except SourceError as exc:
            error = exc
        except OutputError as exc:  # disk full, read-only, I/O error: no output is published
            write_failed = exc
        finally:
            ctrl_c.hold()  # a second Ctrl-C must not leave half-renamed outputs
            bar.close()
            if server is not None:
                server.close()
            if window is not None:
                window.close()
                stats.captures = [str(p) for p in (*window.snapshots, *window.recordings)]
            pipeline.close()
            try:
                stats.outputs = sinks.close(keep=write_failed is None)
            except OutputError as exc:  # the finished video failed its check: nothing was kept
                sinks.close(keep=False)
                write_failed = write_failed or exc
            ctrl_c.restore()
            stats.seconds = time.perf_counter() - started
            stats.timing = pipeline.timing.per_frame()
            stats.classified = pipeline.timing.classified
            stats.skipped = list(getattr(source, "skipped", []))
        if write_failed is not None:
            raise write_failed
        if folder_mode and stats.frames == 0 and stats.skipped and not stats.interrupted:
            raise UserError(f"none of the {len(stats.skipped)} image(s) in {config.source} could be read "
                            f"(first: {stats.skipped[0]})")
        if stats.interrupted:
            held = ", ".join(f"{k} {v}" for k, v in stats.outputs.items())
            log.warning("interrupted after %d frames%s", stats.frames, f"; kept {held}" if held else "")
        if error is not None:
            if stats.outputs:
                held = ", ".join(f"{k} {v}" for k, v in stats.outputs.items())
                raise UserError(f"{error}; kept {held}") from error
            raise error
    return stats
