"""What a finished video left in OUTPUT, and whether ``--resume`` may trust it
(:func:`completed_entry`); the aggregate entry of a video (:func:`video_entry`)."""

from __future__ import annotations

import json
import logging
import math
import os
import stat
from pathlib import Path
from typing import Any

from ..summary import LABELS
from .inputs import JSONL_NAME, SUMMARY_NAME, THUMB_NAME, VIDEO_NAME, VideoInput, is_regular

log = logging.getLogger("realtime.batch")


class _BadStateError(Exception):
    """A state file that cannot be trusted (its message says why)."""


STATE_MAX_BYTES = 1 << 28  # a summary.json larger than this was not written by a batch


def _open_state(path: Path) -> int:
    """A descriptor on ``path`` only if it is a regular file: never a link, a FIFO (which would
    block), a device or a folder (O_NONBLOCK, O_NOFOLLOW, then fstat on what was opened)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise _BadStateError(f"{path.name} is missing") from None
    except OSError as exc:
        why = "a link" if path.is_symlink() else exc.strerror
        raise _BadStateError(f"{path.name} cannot be read ({why})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _BadStateError(f"{path.name} is not a regular file")
    return fd


def _count_lines(path: Path) -> int:
    with os.fdopen(_open_state(path), "rb") as fh:
        return sum(1 for _ in fh)


def _load_state_json(path: Path) -> dict[str, Any]:
    with os.fdopen(_open_state(path), "rb") as fh:
        data = fh.read(STATE_MAX_BYTES + 1)
    if len(data) > STATE_MAX_BYTES:
        raise _BadStateError(f"{path.name} is larger than {STATE_MAX_BYTES >> 20} MiB")
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _BadStateError(f"{path.name} is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise _BadStateError(f"{path.name} is not a JSON object")
    return value


def _number(value: Any, none: bool = False) -> bool:
    if value is None:
        return none
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def summary_problem(summary: dict[str, Any], rel: str) -> str | None:
    """Why a video's summary.json cannot be used as it is (None: it can): every field that the
    aggregate, the CSV and the report read, with its type."""
    if summary.get("source") != rel:
        return f"it is the summary of {summary.get('source')!r}, not of {rel!r}"
    if not _count(summary.get("frames")):
        return "frames is not a count"
    for key in ("last_time_s", "first_time_s"):
        if not _number(summary.get(key), none=True):
            return f"{key} is not a number"
    if not (summary.get("model") is None or isinstance(summary.get("model"), str)):
        return "model is not a name"
    tracks = summary.get("distinct_tracks")
    if not isinstance(tracks, dict) or not all(_count(tracks.get(k)) for k in (*LABELS, "total")):
        return "distinct_tracks is not a count per label"
    dwell = summary.get("dwell_s")
    if not isinstance(dwell, dict) or not all(_number(dwell.get(k), none=True) for k in ("mean", "max")):
        return "dwell_s is not {mean, max}"
    if not _number(summary.get("timeline_bin_s")) or summary["timeline_bin_s"] <= 0:
        return "timeline_bin_s is not a positive number"
    timeline = summary.get("timeline")
    if not isinstance(timeline, list) or not all(
            isinstance(b, dict) and _number(b.get("start_s")) and all(_count(b.get(k)) for k in LABELS)
            for b in timeline):
        return "timeline is not a list of per-label counts"
    records = summary.get("tracks")
    if not isinstance(records, list) or not all(
            isinstance(t, dict) and t.get("label") in LABELS and _count(t.get("frames_seen"))
            and all(_number(t.get(k)) for k in ("dwell_s", "first_seen_s", "last_seen_s"))
            and all(_number(t.get(k), none=True) for k in ("p_female", "mean_p_female", "apparent_age",
                                                           "mean_apparent_age"))
            for t in records):
        return "tracks is not a list of track records"
    return None


def completed_entry(video: VideoInput, output: Path, need_video: bool) -> dict[str, Any] | None:
    """The aggregate entry of a video whose outputs are complete (for --resume), else None.

    Nothing read is trusted: a summary.json that is there but does not check out (not a regular
    file, not JSON, a field of the wrong type, another video's, a JSONL of another length, no
    annotated video when one is wanted) means the video is annotated again, with one
    ``warning:`` line. Special files are never opened (a FIFO would block)."""
    folder = output / video.folder
    summary_path = folder / SUMMARY_NAME
    if not os.path.lexists(summary_path):
        return None  # never finished: annotated (again) without a word
    try:
        summary = _load_state_json(summary_path)
        problem = summary_problem(summary, video.rel)
        if problem is not None:
            raise _BadStateError(f"{SUMMARY_NAME}: {problem}")
        lines = _count_lines(folder / JSONL_NAME)
        if lines != summary["frames"]:
            raise _BadStateError(f"{JSONL_NAME} has {lines} lines for {summary['frames']} frames")
        video_ok = is_regular(folder / VIDEO_NAME) and not (folder / VIDEO_NAME).is_symlink()
        if need_video and not video_ok:
            raise _BadStateError(f"{VIDEO_NAME} is missing or not a regular file")
    except _BadStateError as exc:
        log.warning("%s: its outputs in %s/ do not check out (%s); annotating it again", video.rel,
                    video.folder, exc)
        return None
    entry = video_entry(video, "ok", None, summary, output, resumed=True)
    entry["outputs"]["video"] = f"{video.folder}/{VIDEO_NAME}" if video_ok else None
    return entry


def video_entry(video: VideoInput, status: str, error: str | None, summary: dict[str, Any] | None, output: Path,
           resumed: bool = False, seconds: float | None = None, worker: str | None = None) -> dict[str, Any]:
    folder = output / video.folder
    s = summary or {}
    return {
        "video": video.rel, "folder": video.folder, "status": status, "error": error, "resumed": resumed,
        "frames": s.get("frames", 0), "last_time_s": s.get("last_time_s"), "model": s.get("model"),
        "distinct_tracks": s.get("distinct_tracks", {**dict.fromkeys(LABELS, 0), "total": 0}),
        "dwell_s": s.get("dwell_s", {"mean": None, "max": None}),
        "timeline_bin_s": s.get("timeline_bin_s", 60.0), "timeline": s.get("timeline", []),
        "tracks": s.get("tracks", []),
        "outputs": {name: f"{video.folder}/{fname}" if (folder / fname).is_file() and status == "ok" else None
                    for name, fname in (("video", VIDEO_NAME), ("jsonl", JSONL_NAME), ("summary", SUMMARY_NAME),
                                        ("thumbnail", THUMB_NAME))},
        "processing_s": seconds, "worker": worker,
    }

