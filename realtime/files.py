"""Every file the project writes goes through here: checks before work, atomic replacement,
special files, write errors and temporary-file cleanup.

Rules:
* **No input is ever written**: an output that resolves to the same file as an input, or an
  output folder that is, contains or lies inside an input folder, is refused before anything is
  written (:func:`refuse_overlap`).
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


def refuse_overlap(outputs: Iterable[tuple[str, Path | None, bool]], inputs: Iterable[Path]) -> None:
    """Refuse outputs that would write an input: ``outputs`` are ``(option, path, is_folder)``.

    A file output may not be an input file (or a file inside an input folder that the run reads);
    a folder output may not be an input folder, contain one, or lie inside one."""
    inputs = [Path(p) for p in inputs]
    for option, path, is_folder in outputs:
        if path is None or str(path) == STDOUT or is_special(path):
            continue
        out = _real(Path(path))
        for src in inputs:
            real_src = _real(src)
            if is_folder or src.is_dir():
                if out == real_src or real_src in out.parents or (is_folder and out in real_src.parents):
                    raise UserError(f"{option} {path} overlaps the input {src}: the input would be written; "
                                    "choose an output outside it")
            elif same_file(Path(path), src) or out == real_src:
                raise UserError(f"{option} {path} is the input {src}: it would be overwritten; choose another "
                                "name")


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
