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
from typing import Any

import cv2
import numpy as np

from .errors import UserError
from .files import (
    STDOUT,
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

__all__ = ["ImageFolderSink", "JsonlSink", "OutputError", "VideoSink", "check_writable", "temp_name",
           "write_image_atomic"]

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
