"""Outputs, each written under a temporary name and renamed when complete.

A reader never sees a half-written file: an interrupted run either renames what it has (a valid,
shorter video / JSONL) or removes the temporary file.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .errors import UserError
from .native import quiet_stderr

log = logging.getLogger(__name__)


def check_writable(path: Path, is_dir: bool = False) -> None:
    """Fail early, before any work, when ``path`` cannot be written."""
    target = path if is_dir else path.parent
    if is_dir and path.exists() and not path.is_dir():
        raise UserError(f"output folder {path} exists and is not a folder")
    if not is_dir and path.is_dir():
        raise UserError(f"output {path} is a folder; give a file name")
    probe_dir = target
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir() or not os.access(probe_dir, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {target} (no such folder or no permission)")


def temp_name(path: Path) -> Path:
    """``out.mp4`` → ``.out.partial-<pid>.mp4`` beside it (extension kept for the codec)."""
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


class _AtomicSink:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = temp_name(path)
        self.count = 0
        self.closed = False

    def _finish(self, keep: bool) -> None:
        if keep and self.count > 0:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
        self.closed = True


class VideoSink(_AtomicSink):
    """MPEG-4 video (``mp4v``; plays in VLC/ffmpeg, not all browsers) at the input's size and fps."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], fourcc: str = "mp4v") -> None:
        super().__init__(path)
        check_writable(path)
        path.parent.mkdir(parents=True, exist_ok=True)
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

    def close(self, keep: bool = True) -> None:
        if not self.closed:
            self.writer.release()
            self._finish(keep)


class JsonlSink(_AtomicSink):
    """One JSON object per line, flushed as it goes (to the temporary name)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        check_writable(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = self.tmp.open("w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.fh.write(json.dumps(record, separators=(", ", ": ")) + "\n")
        self.count += 1

    def close(self, keep: bool = True) -> None:
        if not self.closed:
            self.fh.close()
            self._finish(keep)


def write_image_atomic(path: Path, image: np.ndarray, quality: int = 92) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    ext = path.suffix.lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext if ext in (".jpg", ".jpeg", ".png", ".bmp", ".webp") else ".png", image, params)
    if not ok:
        raise UserError(f"cannot encode image {path}")
    buf.tofile(str(tmp))
    os.replace(tmp, path)


class ImageFolderSink:
    """Annotated copies of a folder's images under the same relative names."""

    def __init__(self, folder: Path) -> None:
        check_writable(folder, is_dir=True)
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.count = 0

    def write(self, name: str, image: np.ndarray) -> None:
        write_image_atomic(self.folder / name, image)
        self.count += 1

    def close(self, keep: bool = True) -> None:
        return None
