"""Every file the project writes goes through here: checks before work, atomic replacement,
special files, write errors and temporary-file cleanup.

Rules:
* **No input is ever written, no output replaces another**: an output that resolves to the same
  file as an input, or an output folder that is, contains or lies inside an input folder, is
  refused before anything is written; so are two outputs that name one file, a file output that
  is one of the files an output folder will hold (``--jsonl OUT/contact_sheet.jpg``), and output
  folders inside one another (:func:`check_outputs`, used by every command; ``--force`` never
  lifts it).
* **Regular files are replaced atomically**: written under a hidden temporary name in the same
  folder, then renamed (:class:`AtomicFile`, :func:`write_bytes_atomic`). A reader never sees a
  half-written file, and an error or interruption leaves the old file (or nothing) at the final
  name. Temporary files are removed on every exit path short of SIGKILL (:func:`cleanup_temps`
  runs at exit and from the signal handlers).
* **Special files are streamed**: ``-`` (stdout), character devices (``/dev/null``), FIFOs and
  symlinks to them are written directly, never replaced by a regular file (:func:`is_special`).
* **Write errors are user errors**: disk full, read-only file system, permission, name too long
  and I/O errors become one :class:`~realtime.errors.UserError` line naming the file
  (:func:`write_error`).
"""

from __future__ import annotations

import atexit
import errno
import os
import stat
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import UserError

STDOUT = "-"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

_temps: set[Path] = set()
_temps_lock = threading.Lock()

_ERRNO_WORDS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENAMETOOLONG: "the file name is too long",
    errno.EIO: "input/output error",
    errno.ENOENT: "the folder does not exist",
    errno.EISDIR: "it is a folder",
    errno.ENOTDIR: "a part of the path is not a folder",
}


def write_error(path: Path | str, exc: OSError) -> UserError:
    """One clear line for a failed write."""
    why = _ERRNO_WORDS.get(exc.errno or 0) or exc.strerror or str(exc)
    return UserError(f"cannot write {path}: {why}")


# -- special files and overlap with inputs --------------------------------------------------------
def is_special(path: Path | str) -> bool:
    """``-`` or an existing non-regular file that is not a folder (a device, a FIFO, a socket, or a
    symlink to one): written directly, never replaced."""
    if str(path) == STDOUT:
        return True
    try:
        mode = os.stat(path).st_mode  # follows symlinks: a link to /dev/null is special
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return _real(a) == _real(b)


@dataclass(frozen=True)
class Output:
    """One output of a command, for :func:`check_outputs`.

    ``option`` names it in messages (``--jsonl``); ``folder`` marks an output folder; ``files`` are
    the files the folder will hold when they are known in advance (annotated copies, the contact
    sheet), else ``None``: any file output inside such a folder is refused."""

    option: str
    path: Path | str | None
    folder: bool = False
    files: tuple[Path, ...] | None = None

    def skipped(self) -> bool:
        return self.path is None or str(self.path) == STDOUT or is_special(self.path)


def check_outputs(outputs: Iterable[Output], inputs: Iterable[Path | str] = ()) -> None:
    """The one rule for every command, before anything is written: no output writes an input, and
    no two outputs write one file.

    A file output may not be an input file (or a file inside an input folder that the run reads);
    a folder output may not be an input folder, contain one, or lie inside one. Two file outputs may
    not resolve to one file; a file output may not be a folder output, nor one of the files a folder
    output will hold (nor lie in a folder whose files are not known in advance); two output folders
    may not be one or nest. Special files (``-``, ``/dev/null``, FIFOs) are streams and pass."""
    outs = [o for o in outputs if not o.skipped()]
    inputs = [Path(p) for p in inputs]
    for out in outs:
        _refuse_input(out, inputs)
    for i, a in enumerate(outs):
        for b in outs[i + 1:]:
            _refuse_pair(a, b)


def _refuse_input(out: Output, inputs: list[Path]) -> None:
    real = _real(Path(out.path))
    for src in inputs:
        real_src = _real(src)
        if out.folder or src.is_dir():
            if real == real_src or real_src in real.parents or (out.folder and real in real_src.parents):
                raise UserError(f"{out.option} {out.path} overlaps the input {src}: the input would be written; "
                                "choose an output outside it")
        elif same_file(Path(out.path), src) or real == real_src:
            raise UserError(f"{out.option} {out.path} is the input {src}: it would be overwritten; choose another "
                            "name")


def _refuse_pair(a: Output, b: Output) -> None:
    real_a, real_b = _real(Path(a.path)), _real(Path(b.path))
    if a.folder and b.folder:
        if real_a == real_b or real_a in real_b.parents or real_b in real_a.parents:
            raise UserError(f"{a.option} {a.path} and {b.option} {b.path} are one folder or nested: one output "
                            "would write into the other; choose separate folders")
        return
    if a.folder or b.folder:
        folder, file = (a, b) if a.folder else (b, a)
        real_folder, real_file = (real_a, real_b) if a.folder else (real_b, real_a)
        if real_file == real_folder:
            raise UserError(f"{file.option} {file.path} is the output folder {folder.option}: choose another name")
        if real_folder not in real_file.parents:
            return
        if folder.files is None:
            raise UserError(f"{file.option} {file.path} lies inside the output folder {folder.option} "
                            f"{folder.path}, which the run fills: write it elsewhere")
        if any(_real(Path(f)) == real_file for f in folder.files):
            raise UserError(f"{file.option} {file.path} is also written by {folder.option} {folder.path} "
                            f"({Path(file.path).name}): one output would replace the other; choose another name")
        return
    if real_a == real_b or same_file(Path(a.path), Path(b.path)):
        raise UserError(f"{a.option} and {b.option} both name {b.path}: one output would replace the other; "
                        "give each its own file")


# -- writability ---------------------------------------------------------------------------------
def check_writable(path: Path, is_dir: bool = False) -> None:
    """Fail early, before any work, when ``path`` cannot be written (special files pass)."""
    if is_special(path):
        if is_dir:
            raise UserError(f"output folder {path} is not a folder")
        return
    if len(Path(path).name.encode()) > 255:
        raise UserError(f"cannot write {path}: the file name is too long")
    target = path if is_dir else path.parent
    if is_dir and path.exists() and not path.is_dir():
        raise UserError(f"output folder {path} exists and is not a folder")
    if not is_dir and path.is_dir():
        raise UserError(f"output {path} is a folder; give a file name")
    probe = target
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {target} (no such folder or no permission)")


def make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(folder, exc) from exc


# -- temporary files -----------------------------------------------------------------------------
def temp_name(path: Path) -> Path:
    """``out.mp4`` → ``.out.partial-<pid>.mp4`` beside it (extension kept for the codec); names
    too long for the file system are shortened."""
    stem = path.stem
    suffix = f".partial-{os.getpid()}{path.suffix}"
    budget = 255 - len(suffix.encode()) - 1
    while len(stem.encode()) > budget:
        stem = stem[:-1]
    return path.with_name(f".{stem}{suffix}")


def register_temp(path: Path) -> None:
    with _temps_lock:
        _temps.add(path)


def forget_temp(path: Path) -> None:
    with _temps_lock:
        _temps.discard(path)


def cleanup_temps() -> None:
    """Remove every temporary file this process still has (at exit, on SIGTERM/SIGHUP)."""
    with _temps_lock:
        leftovers = list(_temps)
        _temps.clear()
    for path in leftovers:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


atexit.register(cleanup_temps)


def publish(tmp: Path, path: Path) -> None:
    """Rename a finished temporary file into place."""
    try:
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from exc
    finally:
        forget_temp(tmp)


def discard(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    finally:
        forget_temp(tmp)


@contextmanager
def open_output(path: Path | str, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Write ``path`` safely: special files directly, regular files under a temporary name that
    replaces ``path`` only when the block ends without an error."""
    binary = "b" in mode
    if str(path) == STDOUT:
        import sys

        stream = sys.stdout.buffer if binary else sys.stdout
        yield stream
        stream.flush()
        return
    path = Path(path)
    if is_special(path):
        try:
            with open(path, mode, encoding=None if binary else encoding) as fh:
                yield fh
        except OSError as exc:
            raise write_error(path, exc) from exc
        return
    tmp = temp_name(path)
    register_temp(tmp)
    try:
        with open(tmp, mode, encoding=None if binary else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        discard(tmp)
        raise write_error(path, exc) from exc
    except BaseException:
        discard(tmp)
        raise
    publish(tmp, path)


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    with open_output(path, "wb") as fh:
        fh.write(data)


def write_text_atomic(path: Path | str, text: str) -> None:
    with open_output(path, "w") as fh:
        fh.write(text)


# -- listing -------------------------------------------------------------------------------------
def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, case-insensitive extensions, hidden files and
    partial outputs skipped), sorted."""
    out = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        out.append(path)
    return out
