"""Writing OUTPUT: each file replaced atomically (:func:`write_bytes_replacing`), the aggregate
(summary.csv, summary.json) and the clean-up of what an interrupted batch left."""

from __future__ import annotations

import contextlib
import csv
import io
import os
from pathlib import Path
from typing import Any

from .. import files
from ..summary import LABELS, dumps
from .inputs import JSONL_NAME, SUMMARY_NAME, THUMB_NAME, VIDEO_NAME


def write_bytes_replacing(path: Path, data: bytes) -> None:
    """Write a batch output: under a temporary name beside it (``realtime.files.temp_name``,
    registered so that it is removed on every exit path short of SIGKILL), then renamed into place.
    Unlike ``realtime.files.write_bytes_atomic`` (:func:`realtime.files.open_output`), whatever is at
    the name (a FIFO, a device, a link left there) is replaced, never written through: a batch's
    outputs are regular files in OUTPUT (a FIFO at the name would block the batch forever)."""
    files.make_folder(path.parent)
    tmp = files.temp_name(path)
    files.register_temp(tmp)
    try:
        tmp.unlink(missing_ok=True)
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        files.discard(tmp)
        raise files.write_error(path, exc) from exc
    except BaseException:
        files.discard(tmp)
        raise
    files.publish(tmp, path)


def sweep_partials(folders: list[Path]) -> None:
    """Remove this batch's temporary files (never at a final name) after an interruption."""
    for folder in folders:
        with contextlib.suppress(OSError):
            for p in folder.iterdir():
                if p.name.startswith(".") and ".partial-" in p.name and not p.is_symlink() and p.is_file():
                    p.unlink(missing_ok=True)


def remove_unfinished(folders: list[Path]) -> None:
    """A video whose summary.json is not there is not done: what a worker finished of it (its
    annotated video, renamed just before an interruption) is removed, so that an output folder
    holds a complete set of outputs or none."""
    for folder in folders:
        if os.path.lexists(folder / SUMMARY_NAME):
            continue
        for name in (VIDEO_NAME, JSONL_NAME, THUMB_NAME):
            path = folder / name
            if path.is_file() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.unlink()



CSV_COLUMNS = ("video", "status", "error", "frames", "last_time_s", "tracks", *LABELS, "dwell_mean_s", "dwell_max_s",
               "folder", "processing_s")


def write_aggregate(output: Path, aggregate: dict[str, Any]) -> None:
    """OUTPUT/summary.json and OUTPUT/summary.csv (one row per video, failed ones with their error)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for e in aggregate["videos"]:
        d = e["distinct_tracks"]
        writer.writerow([e["video"], e["status"], e["error"] or "", e["frames"], _blank(e["last_time_s"]),
                         d.get("total", 0), *(d.get(k, 0) for k in LABELS), _blank(e["dwell_s"].get("mean")),
                         _blank(e["dwell_s"].get("max")), e["folder"], _blank(e["processing_s"])])
    write_bytes_replacing(output / "summary.csv", buf.getvalue().encode("utf-8"))
    write_bytes_replacing(output / "summary.json", dumps(aggregate).encode("utf-8"))


def _blank(value: Any) -> Any:
    return "" if value is None else value

