"""Outputs, each written under a temporary name and renamed when complete.

A reader never sees a half-written file: an interrupted run either renames what it has (a valid,
shorter video / JSONL) or removes the temporary file.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from .cli import plural
from .errors import UserError
from .face import Face, frame_record
from .files import (
    STDOUT,
    Output,
    check_outputs,
    check_writable,
    discard,
    is_special,
    make_folder,
    publish,
    register_temp,
    temp_name,
    write_bytes_atomic,
    write_error,
)
from .native import quiet_stderr
from .overlay import caption, contact_sheet

if TYPE_CHECKING:
    from .pipeline import Config, FacePipeline
    from .sources import Frame, Source

__all__ = ["ImageFolderSink", "JsonlSink", "OutputError", "RunOutputs", "VideoSink", "check_run_outputs",
           "check_writable", "planned_outputs", "temp_name", "write_image_atomic"]

log = logging.getLogger(__name__)


class OutputError(UserError):
    """An output could not be written (disk full, read-only, I/O error): no output is kept."""


class _AtomicSink:
    """A regular file is written under a temporary name and renamed when complete; a special file
    (``-``, a device, a FIFO, a link to one) is written directly."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.special = is_special(path)
        self.tmp = path if self.special else temp_name(path)
        if not self.special:
            register_temp(self.tmp)
        self.count = 0
        self.closed = False

    def _finish(self, keep: bool) -> None:
        self.closed = True
        if self.special:
            return
        if keep and self.count > 0:
            publish(self.tmp, self.path)
        else:
            discard(self.tmp)


class VideoSink(_AtomicSink):
    """MPEG-4 video (``mp4v``; plays in VLC/ffmpeg, not all browsers) at the input's size and fps.

    OpenCV's writer reports no write errors (a full disk gives an unplayable file and no error),
    so :meth:`close` reopens the finished file and counts its frames before publishing it."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], fourcc: str = "mp4v") -> None:
        check_writable(path)
        make_folder(path.parent)
        super().__init__(path)
        self.size = size
        with quiet_stderr():  # FFmpeg notes such as "tag VP80 is not supported" stay off the terminal
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if not self.writer.isOpened():
            self.tmp.unlink(missing_ok=True)
            raise UserError(f"cannot write video {path} (codec {fourcc} unavailable or bad path)")

    def write(self, frame: np.ndarray) -> None:
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size)
        self.writer.write(frame)
        self.count += 1

    finalized = False

    def finalize(self) -> None:
        """Finish the file and check it (raises :class:`OutputError`); :meth:`close` publishes it."""
        if self.finalized or self.closed:
            return
        self.writer.release()
        self.finalized = True
        if self.count > 0 and not self.special:
            frames = _frames_in(self.tmp)
            if frames < self.count:
                raise OutputError(f"cannot write video {self.path}: the written file holds {frames} of "
                                  f"{self.count} frames (the disk is full?); nothing kept")

    def close(self, keep: bool = True) -> None:
        if self.closed:
            return
        if not self.finalized:
            self.writer.release()
            self.finalized = True
        self._finish(keep)


def _frames_in(path: Path) -> int:
    """Frames a finished video file really holds (0 when it cannot be opened)."""
    try:
        if path.stat().st_size == 0:
            return 0
    except OSError:
        return 0
    with quiet_stderr():
        cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                return 0
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            return n if n > 0 else 0
        finally:
            cap.release()


class JsonlSink(_AtomicSink):
    """One JSON object per line (to the temporary name, or straight to stdout with ``-``)."""

    def __init__(self, path: Path) -> None:
        if str(path) != STDOUT:
            check_writable(path)
            make_folder(path.parent)
        super().__init__(path)
        try:
            self.fh = sys.stdout if str(path) == STDOUT else open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            discard(self.tmp)
            raise OutputError(str(write_error(path, exc))) from exc

    def write(self, record: dict[str, Any]) -> None:
        try:
            self.fh.write(json.dumps(record, separators=(", ", ": ")) + "\n")
            if self.special:
                self.fh.flush()
        except OSError as exc:
            raise OutputError(str(write_error(self.path, exc))) from exc
        self.count += 1

    finalized = False

    def finalize(self) -> None:
        """Flush everything to the disk (raises :class:`OutputError`); :meth:`close` publishes it."""
        if self.finalized or self.closed:
            return
        self.finalized = True
        try:
            self.fh.flush()
            if self.fh is not sys.stdout:
                if not self.special:
                    os.fsync(self.fh.fileno())
                self.fh.close()
        except OSError as exc:
            raise OutputError(str(write_error(self.path, exc))) from exc

    def close(self, keep: bool = True) -> None:
        if self.closed:
            return
        if not self.finalized:
            self.finalized = True
            try:
                if self.fh is not sys.stdout:
                    self.fh.close()
            except OSError:
                keep = False
        self._finish(keep)


def write_image_atomic(path: Path, image: np.ndarray, quality: int = 92) -> None:
    make_folder(path.parent)
    ext = path.suffix.lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext if ext in (".jpg", ".jpeg", ".png", ".bmp", ".webp") else ".png", image, params)
    if not ok:
        raise UserError(f"cannot encode image {path}")
    try:
        write_bytes_atomic(path, buf.tobytes())
    except UserError as exc:
        raise OutputError(str(exc)) from exc


class ImageFolderSink:
    """Annotated copies of a folder's images under the same relative names."""

    def __init__(self, folder: Path) -> None:
        check_writable(folder, is_dir=True)
        make_folder(folder)
        self.folder = folder
        self.count = 0

    def write(self, name: str, image: np.ndarray) -> None:
        write_image_atomic(self.folder / name, image)
        self.count += 1

    def close(self, keep: bool = True) -> None:
        return None


# --- the outputs of one run (realtime.pipeline.run) ----------------------------------------------
def input_paths(source: Source) -> list[Path]:
    """The files or folder a source reads (for the overlap check); none for cameras and URLs."""
    path = getattr(source, "path", None) or getattr(source, "folder", None)
    return [Path(path)] if path is not None else []


def single_image_output(config: Config, source: Source) -> bool:
    """``--output x.jpg`` for one image writes that image (not a folder named x.jpg)."""
    return (source.kind == "image" and config.output is not None
            and config.output.suffix.lower() in IMAGE_OUTPUT_EXTENSIONS and not config.output.is_dir())


IMAGE_OUTPUT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def planned_outputs(config: Config, folder_mode: bool, source: Source) -> list[Output]:
    """Every output of the run, with the files an output folder will hold (for :func:`check_outputs`)."""
    single = single_image_output(config, source)
    outputs = []
    jsonl = config.jsonl
    if config.output is not None and folder_mode and not single:
        folder = config.output
        if source.kind == "folder" and not source.files:
            source.open()  # lists the images (again when the run opens it): the names are checked now
        names = [Path(p).relative_to(source.path).as_posix() for p in getattr(source, "files", [])]
        if source.kind == "image":
            names = [Path(source.path).name]
        files = [folder / name for name in names]
        if config.contact_sheet:
            files.append(folder / "contact_sheet.jpg")
        if jsonl is None:
            jsonl = folder / "predictions.jsonl"
        outputs.append(Output("--output", folder, folder=True, files=tuple(files)))
        # An input named like the contact sheet would be replaced by it: two outputs, one file.
        if config.contact_sheet and "contact_sheet.jpg" in names:
            raise UserError(f"{source.path} holds an image named contact_sheet.jpg, which --output would replace "
                            "with the contact sheet; rename that image first")
    elif config.output is not None:
        outputs.append(Output("--output", config.output))
    outputs.append(Output("--jsonl" if config.jsonl is not None else "--output's predictions.jsonl", jsonl))
    outputs.append(Output("--summary", config.summary))
    return outputs


def check_run_outputs(config: Config, folder_mode: bool, source: Source | None = None) -> None:
    """Before any work: every output of the run can be written and writes no input and no other output."""
    single = source is not None and single_image_output(config, source)
    if source is not None:
        check_outputs(planned_outputs(config, folder_mode, source), input_paths(source))
    if config.output is not None:
        if single:
            check_writable(config.output)
        elif folder_mode:
            check_writable(config.output, is_dir=True)
        else:
            if config.output.suffix.lower() not in (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm"):
                raise UserError(f"--output for a video source must be a video file (.mp4), got {config.output}")
            check_writable(config.output)
    if config.jsonl is not None:
        check_writable(config.jsonl)


class RunOutputs:
    """All outputs of one run (video, annotated images and contact sheet, JSONL); written frame by
    frame and closed (renamed into place) together."""

    def __init__(self, config: Config, source: Source, folder_mode: bool) -> None:
        self.video: VideoSink | None = None
        self.images: ImageFolderSink | None = None
        self.jsonl: JsonlSink | None = None
        self.sheet_tiles: list[tuple[np.ndarray, str, str]] = []
        self.sheet_path: Path | None = None
        self.config = config
        self.fps = source.fps
        # Live sources (streams, cameras) report a nominal rate or none: the video is written at
        # the rate measured over its first frames, so it plays at the speed it was captured.
        self.measure_fps = source.live
        self.pending: list[tuple[float, np.ndarray]] = []
        jsonl = config.jsonl
        self.single_image = single_image_output(config, source)
        if self.single_image:
            pass  # written at the end of the one frame (write()), atomically
        elif folder_mode and config.output is not None:
            self.images = ImageFolderSink(config.output)
            jsonl = jsonl or config.output / "predictions.jsonl"
            if config.contact_sheet:
                self.sheet_path = config.output / "contact_sheet.jpg"
        if jsonl is not None:
            self.jsonl = JsonlSink(jsonl)

    MAX_SHEET_TILES = 400

    def write(self, frame: Frame, faces: list[Face], picture: np.ndarray, annotated: np.ndarray,
              pipeline: FacePipeline) -> None:
        if self.jsonl is not None:
            self.jsonl.write(frame_record(frame, faces, privacy=self.config.privacy))
        if self.single_image:
            write_image_atomic(self.config.output, annotated)
            self.written_image = self.config.output
            return
        if self.images is not None:
            self.images.write(frame.name or f"frame_{frame.index:06d}.jpg", annotated)
            if self.sheet_path is not None and len(self.sheet_tiles) < self.MAX_SHEET_TILES:
                # Tiles come from the picture the outputs show (blurred with --blur: they are faces too).
                crops = pipeline.classifier.crops(picture, [f.crop_box for f in faces])
                for face, crop in zip(faces, crops):
                    self.sheet_tiles.append((crop if pipeline.classifier.info.colour_order == "BGR"
                                             else crop[..., ::-1], face.label or "uncertain",
                                             f"{caption(face)}\n{Path(frame.name or '').name}"))
        elif self.config.output is not None:
            if self.video is None and self.measure_fps:
                self.pending.append((frame.time_s, annotated))
                span = self.pending[-1][0] - self.pending[0][0]
                if len(self.pending) < self.MEASURE_FRAMES and span < self.MEASURE_SECONDS:
                    return
                self._open_video(frame.image.shape)
                return
            if self.video is None:
                self._open_video(frame.image.shape)
            self.video.write(annotated)

    MEASURE_FRAMES, MEASURE_SECONDS = 15, 2.0

    def _open_video(self, shape: tuple[int, ...]) -> None:
        """Open the video writer, at the measured rate for live sources, and write what waited."""
        pending, self.pending = self.pending, []
        if len(pending) >= 2 and pending[-1][0] > pending[0][0]:
            measured = (len(pending) - 1) / (pending[-1][0] - pending[0][0])
            if 0.5 <= measured <= 240:
                if abs(measured - self.fps) > 0.5:
                    log.info("recording at the measured %.1f fps (the source says %.1f)", measured, self.fps)
                self.fps = measured
        h, w = shape[:2]
        self.video = VideoSink(self.config.output, self.fps, (w, h), self.config.video_codec)
        for _, image in pending:
            self.video.write(image)

    def close(self, keep: bool) -> dict[str, str]:
        """Publish every output (``keep``) or none: all are finished and checked first, so a disk
        that fills up at the end leaves no output at a final name."""
        if self.pending and keep:  # a short live run: fewer frames than the rate measurement wanted
            self._open_video(self.pending[-1][1].shape)
        if keep:
            try:
                for sink in (self.jsonl, self.video):
                    if sink is not None:
                        sink.finalize()
            except OutputError:
                self.close(keep=False)
                raise
        held: dict[str, str] = {}
        if getattr(self, "written_image", None) is not None and keep:
            held["image"] = str(self.written_image)
        if self.video is not None:
            self.video.close(keep)
            if keep and self.video.count:
                held["video"] = f"{self.video.path} ({self.video.count} frames)"
        if self.jsonl is not None:
            self.jsonl.close(keep)
            if keep and self.jsonl.count:
                held["jsonl"] = f"{self.jsonl.path} ({plural(self.jsonl.count, 'line')})"
        if self.images is not None:
            held["images"] = f"{self.images.folder} ({plural(self.images.count, 'image')})"
            if self.sheet_path is not None and keep and self.images.count:
                write_image_atomic(self.sheet_path, contact_sheet(self.sheet_tiles))
                held["contact_sheet"] = str(self.sheet_path)
        return held
