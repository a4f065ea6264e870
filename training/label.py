"""Sort an unlabelled folder of face images into female/ and male/, or fix a labelled one.

Label mode copies; the source folder is never changed:

    python -m training label --src UNSORTED --out DATASET [--model M.tflite] [--order ORDER]

Each image is shown with its detected faces boxed (the largest one, the face the model sees, in
green). One key per image:

    f                female: copy it into DATASET/female/
    m                male: copy it into DATASET/male/
    Enter            accept the model's guess (with --model; not while the model is uncertain)
    s, Space         skip (remembered; --retry-skipped shows skipped images again)
    u, Backspace     undo the last decision: delete its copy and show that image again
    q, Esc           quit; progress is in DATASET/.label_state.json and the next run resumes

Copies keep their file name; when the name is taken, a short content hash is added
(photo.jpg -> photo-1a2b3c4d.jpg). With --model, images are shown most confident first
(--order confidence), so mostly Enter confirms the guess; --order uncertain shows the hard ones
first, --order name (the default without a model) goes by file name.

Review mode moves files inside the dataset being fixed:

    python -m training label --review DATASET --model M.tflite

Images of DATASET/female/ and DATASET/male/ are shown most disputed first (where the model
disagrees most with the folder the image is in). Keys:

    x, Tab           move the image to the other class
    f, m             file it as female / male (moves it only if it is in the other folder)
    s, Space, Enter  keep it where it is
    u, Backspace     undo the last step (a moved image is moved back)
    q, Esc           quit

Every move (an undo too) is appended to DATASET/relabel_log.csv with the columns
time, file, from, to, p_female, moved_to; DATASET/.label_state.json follows the move when the
dataset was made with this tool.

Unreadable images (and images over 50 megapixels, measured from their header before decoding)
are reported as warnings, skipped, and counted in the summary at the end.

The state file is untrusted input: it is checked entry by entry when it is read, and anything
malformed (an unknown decision, a copy's path that leaves its class folder, ...) stops the tool
with one error line naming the file. Undo deletes only a copy inside the dataset.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import filecmp
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
from tqdm import tqdm

from realtime import overlay
from realtime.classifier import GenderClassifier
from realtime.cli import positive_int
from realtime.crop import largest_box
from realtime.errors import UserError
from realtime.face import UNCERTAIN, Face
from realtime.face_detector import Detection, StillImageDetector
from realtime.sources import IMAGE_EXTENSIONS, ImageTooLargeError, read_image_limited

from .data import LABELS, folder_items

log = logging.getLogger(__name__)

STATE_NAME = ".label_state.json"
STATE_VERSION = 1
LOG_NAME = "relabel_log.csv"
LOG_COLUMNS = ("time", "file", "from", "to", "p_female", "moved_to")
ORDERS = ("name", "confidence", "uncertain")

# Display: large images are shrunk to fit, small ones (face crops) enlarged up to MIN_SIDE, and the
# canvas is padded so the text lines always fit.
MAX_W, MAX_H = 1280, 800
MIN_SIDE = 480
MIN_CANVAS_W, MIN_CANVAS_H = 640, 260
WINDOW = "label"

WHITE = (255, 255, 255)
GREY = (170, 170, 170)
GREEN = (0, 220, 0)
COLOURS = {"female": (200, 120, 255), "male": (255, 170, 60), UNCERTAIN: (0, 215, 255)}

KeySource = Callable[[], int]
Show = Callable[[np.ndarray, str], None]
Colour = tuple[int, int, int]
Line = tuple[str, Colour]

LABEL_KEYS = {"f": "female", "m": "male", "enter": "accept", "s": "skip", "space": "skip",
              "u": "undo", "backspace": "undo", "q": "quit", "esc": "quit"}
REVIEW_KEYS = {"x": "flip", "tab": "flip", "f": "female", "m": "male", "s": "keep", "space": "keep",
               "enter": "keep", "u": "undo", "backspace": "undo", "q": "quit", "esc": "quit"}
LABEL_HELP = "f female  m male  Enter accept guess  s skip  u undo  q quit"
REVIEW_HELP = "x/Tab other class  f/m file as  s/Enter keep  u undo  q quit"


@dataclass(eq=False)
class Item:
    """One image on the queue. ``label`` is its class folder in review mode."""

    path: Path
    label: str | None = None
    faces: list[Detection] | None = None  # None: not analysed yet
    prediction: Face | None = None
    problem: str | None = None  # why it could not be read

    @property
    def key(self) -> str:
        return str(self.path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _other(label: str) -> str:
    return LABELS[1 - LABELS.index(label)]


# -- files ------------------------------------------------------------------------------------
def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file beside ``path``, fsync it, then rename it over ``path``.

    A failed write (disk full, read-only, permissions) leaves ``path`` as it was, removes the temp
    file and raises :class:`UserError` with one line."""
    tmp = path.with_name(f"{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from exc


def free_name(folder: Path, source: Path, reuse_identical: bool = False) -> Path:
    """Where ``source`` goes in ``folder``: its own name, or ``stem-HASH8.ext`` when that is taken.

    With ``reuse_identical``, a file already there with the same bytes is returned as is (a copy
    made before a crash that the state file never heard of).
    """
    candidate = folder / source.name
    if not candidate.exists() or (reuse_identical and filecmp.cmp(source, candidate, shallow=False)):
        return candidate
    digest = hashlib.sha1(source.read_bytes()).hexdigest()[:8]
    for n in range(1000):
        suffix = f"-{digest}" if n == 0 else f"-{digest}-{n}"
        candidate = folder / f"{source.stem}{suffix}{source.suffix}"
        if not candidate.exists() or (reuse_identical and filecmp.cmp(source, candidate, shallow=False)):
            return candidate
    raise UserError(f"no free file name for {source.name} in {folder}")


def list_images(src: Path, exclude: Path | None = None) -> list[Path]:
    """Image files under ``src`` (any depth, sorted, hidden files and ``exclude`` left out)."""
    paths = []
    for path in sorted(src.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        rel = path.relative_to(src)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if exclude is not None and path.resolve().is_relative_to(exclude):
            continue
        paths.append(path)
    return paths


def check_writable(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and prove a file can be written there, or raise UserError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {what} {folder}: {exc.strerror or exc}") from exc
    if not folder.is_dir():
        raise UserError(f"{what} {folder} is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UserError(f"{what} {folder} is not writable: {exc.strerror or exc}") from exc


ENTRY_KEYS = frozenset({"decision", "dest", "time", "copied", "relabelled"})


def _short(value: Any, limit: int = 60, tail: bool = False) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters (keeping the end with ``tail``)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return "..." + text[3 - limit:] if tail else text[: limit - 3] + "..."


def check_dest(dest: Any, decision: str) -> str | None:
    """Why ``dest`` is not a copy's place in the dataset (None when it is): a relative POSIX path
    inside the ``decision`` folder, with no ``..``, no absolute part and no backslash."""
    if not isinstance(dest, str) or not dest:
        return "dest is not a path"
    if "\\" in dest or "\0" in dest or dest.startswith("/") or (len(dest) > 1 and dest[1] == ":"):
        return f"dest {_short(dest)} is not a relative path"
    parts = dest.split("/")
    if any(part in ("", ".", "..") for part in parts) or len(parts) < 2:
        return f"dest {_short(dest)} points outside its class folder"
    if parts[0] != decision:
        return f"dest {_short(dest)} is not in the {decision}/ folder"
    return None


def check_entry(key: Any, entry: Any) -> str | None:
    """Why one state entry is malformed (None when it is well formed)."""
    if not isinstance(key, str) or not key:
        return "an entry without a file name"
    if not isinstance(entry, dict):
        return "not an object"
    unknown = set(entry) - ENTRY_KEYS
    if unknown:
        return f"unknown field {_short(sorted(unknown)[0])}"
    decision = entry.get("decision")
    if decision not in (*LABELS, "skip"):
        return f"decision {_short(decision)} is not female, male or skip"
    dest = entry.get("dest")
    if decision == "skip":
        if dest is not None:
            return "a skipped image with a copy"
    else:
        problem = check_dest(dest, decision)
        if problem:
            return problem
    for name in ("time", "relabelled"):
        if name in entry and not isinstance(entry[name], str):
            return f"{name} is not text"
    if "copied" in entry and not isinstance(entry["copied"], bool):
        return "copied is not true or false"
    return None


def load_state(path: Path) -> dict[str, dict[str, Any]]:
    """The ``entries`` of a state file (empty when there is none), every one checked.

    Anything malformed raises :class:`UserError`: one line naming the file and the first problem."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unknown state version {_short(data.get('version'))}")
        entries = data.get("entries")
        if not isinstance(entries, dict):
            raise ValueError("no entries object")
        for key, entry in entries.items():
            problem = check_entry(key, entry)
            if problem:
                raise ValueError(f"entry {_short(key, 200, tail=True)}: {problem}")
        return entries
    except (OSError, ValueError, RecursionError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        reason = " ".join(reason.split())  # one line, whatever the file held
        raise UserError(f"state file {path} is damaged ({reason}); move it away to start over") from exc


def inside(root: Path, rel: str) -> Path | None:
    """``root / rel`` when its folder really is inside ``root`` (symbolic links followed), else None."""
    path = root / rel
    try:
        if path.parent.resolve().is_relative_to(root.resolve()):
            return path
    except (OSError, RuntimeError):
        pass
    return None


def save_state(path: Path, entries: dict[str, dict[str, Any]]) -> None:
    write_json_atomic(path, {"version": STATE_VERSION, "updated": _now(), "entries": entries})


# -- faces and model ----------------------------------------------------------------------------
class Analyser:
    """Reads images, finds faces with the runtime's still-image detector (both BlazeFace models,
    then a padded retry: what ``python -m realtime`` does with a photo) and asks the model about
    the largest face (the whole image when there is no face)."""

    def __init__(self, classifier: GenderClassifier | None = None) -> None:
        self.classifier = classifier
        self._detector = StillImageDetector()

    def faces(self, image: np.ndarray) -> list[Detection]:
        return self._detector.detect(image)

    def load(self, item: Item) -> np.ndarray | None:
        """The image (None when unreadable, with ``item.problem`` saying why); analyses ``item`` the
        first time. Its pixels are counted from its header before it is decoded."""
        try:
            image = read_image_limited(item.path)
        except ImageTooLargeError as exc:
            item.problem = f"it is {exc}"
            return None
        if image is None:
            item.problem = "unreadable or not an image"
            return None
        if item.faces is None:
            item.faces = self.faces(image)
            if self.classifier is not None:
                index = largest_box([f.box for f in item.faces])
                h, w = image.shape[:2]
                box = item.faces[index].crop_box if index is not None else (0, 0, w, h)
                item.prediction = self.classifier.classify(image, [box])[0]
        return image

    def close(self) -> None:
        self._detector.close()

    def __enter__(self) -> Analyser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def analyse_all(session: _Queue, analyser: Analyser, what: str) -> None:
    """Analyse every queued item up front (needed to order by the model); drop unreadable ones."""
    for item in tqdm(list(session.queue), desc=what, unit="img", disable=None):
        if analyser.load(item) is None:
            session.drop_unreadable(item)


# -- sessions (no UI) -----------------------------------------------------------------------
class _Queue:
    """Items still to show, front first; unreadable ones are dropped and remembered."""

    keys: ClassVar[dict[str, str]] = {}
    help = ""

    def __init__(self, items: Iterable[Item]) -> None:
        self.queue: deque[Item] = deque(items)
        self.unreadable: list[Path] = []

    @property
    def current(self) -> Item | None:
        return self.queue[0] if self.queue else None

    def drop_unreadable(self, item: Item | None = None) -> None:
        item = item or self.queue[0]
        self.queue.remove(item)
        self.unreadable.append(item.path)
        log.warning("unreadable image skipped: %s (%s)", item.path, item.problem or "unreadable or not an image")

    def order(self, key: Callable[[Item], float]) -> None:
        """Reorder the queue by ``key`` (smallest first; ties keep their order)."""
        self.queue = deque(sorted(self.queue, key=key))

    def apply(self, action: str) -> str:
        """Carry out one key's action on the current item; returns a message for the screen."""
        raise NotImplementedError

    def status(self, item: Item) -> list[Line]:
        raise NotImplementedError

    def title(self, item: Item) -> str:
        return item.path.name


class LabelSession(_Queue):
    """Label mode: copy images from ``src`` into ``out/female`` and ``out/male``.

    The state file ``out/.label_state.json`` maps each decided source file (absolute path) to
    ``{"decision": "female"|"male"|"skip", "dest": "female/x.jpg"|null, "time": ISO-8601}``, in the
    order the decisions were made; it is rewritten atomically after every decision.
    """

    keys = LABEL_KEYS
    help = LABEL_HELP

    def __init__(self, src: Path, out: Path, paths: Sequence[Path], retry_skipped: bool = False) -> None:
        self.src, self.out = src, out
        self.state_path = out / STATE_NAME
        self.entries = load_state(self.state_path)
        self.items = {str(p): Item(p) for p in paths}
        pending = [item for key, item in self.items.items() if key not in self.entries
                   or (retry_skipped and self.entries[key]["decision"] == "skip")]
        super().__init__(pending)
        self.total = len(self.items)

    # -- decisions ---------------------------------------------------------------------------
    def decide(self, label: str) -> Path:
        """File the current image as ``label``: copy it, record it, move on. Returns the copy."""
        if label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {label!r}")
        item = self._pop()
        dest, copied = self._copy(item.path, self.out / label)
        try:
            self._record(item, label, dest.relative_to(self.out).as_posix(), copied)
        except UserError:  # the state could not be saved: no copy it does not know about
            if copied:
                dest.unlink(missing_ok=True)
            self.queue.appendleft(item)
            raise
        return dest

    def skip(self) -> None:
        self._record(self._pop(), "skip", None)

    def undo(self) -> Item | None:
        """Revert the last decision about an image of this source: delete its copy, forget it and
        put the image back at the front of the queue. None when there is nothing to undo."""
        key = next((k for k in reversed(self.entries) if k in self.items), None)
        if key is None:
            return None
        entry = self.entries.pop(key)
        try:
            save_state(self.state_path, self.entries)
        except UserError:
            self.entries[key] = entry
            raise
        dest = entry.get("dest")
        if dest and entry.get("copied", True) and not any(e.get("dest") == dest
                                                          for e in self.entries.values()):
            self._delete_copy(dest)
        item = self.items[key]
        if item in self.queue:
            self.queue.remove(item)
        self.queue.appendleft(item)
        return item

    def _delete_copy(self, dest: str) -> None:
        """Delete a copy this tool made, only ever inside the dataset's class folders (``dest`` was
        checked when the state was read; a folder that is a link to elsewhere is caught here)."""
        path = inside(self.out, dest) if check_dest(dest, dest.split("/")[0]) is None else None
        if path is None or dest.split("/")[0] not in LABELS:
            log.warning("undo: not deleting %s: it is not inside %s", dest, self.out)
            return
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("undo: could not delete %s: %s", path, exc.strerror or exc)

    def _pop(self) -> Item:
        if not self.queue:
            raise IndexError("no image left")
        return self.queue.popleft()

    def _record(self, item: Item, decision: str, dest: str | None, copied: bool = False) -> None:
        before = dict(self.entries)
        self.entries.pop(item.key, None)  # a re-decided image moves to the end of the history
        self.entries[item.key] = {"decision": decision, "dest": dest, "time": _now()}
        if dest is not None and not copied:
            self.entries[item.key]["copied"] = False  # an identical file was there: undo keeps it
        try:
            save_state(self.state_path, self.entries)
        except UserError:
            self.entries = before
            raise

    @staticmethod
    def _copy(source: Path, folder: Path) -> tuple[Path, bool]:
        """Copy ``source`` into ``folder`` (temp name + rename); ``(dest, False)`` when a file with
        the same bytes was there already."""
        dest = free_name(folder, source, reuse_identical=True)
        if dest.exists():
            log.info("%s is already in %s as %s", source.name, folder.name, dest.name)
            return dest, False
        part = dest.with_name(f".{dest.name}.part")
        try:
            shutil.copy2(source, part)
            os.replace(part, dest)
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise UserError(f"cannot copy {source} to {dest}: {exc.strerror or exc}") from exc
        return dest, True

    # -- reporting ---------------------------------------------------------------------------
    def counts(self) -> Counter[str]:
        """Decisions about images of this source (all runs)."""
        return Counter(e["decision"] for k, e in self.entries.items() if k in self.items)

    @property
    def position(self) -> int:
        return self.total - len(self.queue) + 1

    def apply(self, action: str) -> str:
        item = self.current
        assert item is not None
        if action in LABELS:
            self.decide(action)
            return f"{item.path.name} -> {action}"
        if action == "accept":
            if item.prediction is None:
                return "no model guess: press f or m"
            if item.prediction.label not in LABELS:
                return "the model is uncertain: press f or m"
            self.decide(item.prediction.label)
            return f"{item.path.name} -> {item.prediction.label} (accepted)"
        if action == "skip":
            self.skip()
            return f"{item.path.name} skipped"
        if action == "undo":
            undone = self.undo()
            return f"undone: {undone.path.name}" if undone else "nothing to undo"
        raise ValueError(f"unknown action {action!r}")

    def status(self, item: Item) -> list[Line]:
        c = self.counts()
        lines = [(f"{self.position} of {self.total}   female {c['female']}   male {c['male']}   "
                  f"skipped {c['skip']}", WHITE)]
        if item.prediction is not None:
            p = item.prediction
            hint = "" if p.label == UNCERTAIN else "   (Enter accepts)"
            lines.append((f"model: {p.label} {p.confidence:.0%}   p_female {p.p_female:.2f}{hint}",
                          COLOURS[p.label]))
        try:
            lines.append((str(item.path.relative_to(self.src)), GREY))
        except ValueError:
            lines.append((str(item.path), GREY))
        return lines

    def summary(self) -> None:
        c = self.counts()
        log.info("summary: labelled female %d, male %d; skipped %d; unreadable %d; left %d of %d "
                 "(state: %s)", c["female"], c["male"], c["skip"], len(self.unreadable),
                 len(self.queue), self.total, self.state_path)
        _report_unreadable(self.unreadable)
        if self.queue:
            log.info("run the same command again to continue where you stopped")


class ReviewSession(_Queue):
    """Review mode: walk ``root/female`` and ``root/male``; move mislabelled images across.

    Each move is appended to ``root/relabel_log.csv``; the label state file, when there is one,
    is updated so it keeps pointing at the image.
    """

    keys = REVIEW_KEYS
    help = REVIEW_HELP

    def __init__(self, root: Path, items: Sequence[Item]) -> None:
        super().__init__(items)
        self.root = root
        self.total = len(items)
        self.log_path = root / LOG_NAME
        self.history: list[tuple[Item, Path | None]] = []  # (item, path before a move | None: kept)
        self.moved = 0
        self.kept = 0

    def keep(self) -> None:
        self.history.append((self.queue.popleft(), None))
        self.kept += 1

    def move(self, to: str | None = None) -> Path:
        """Move the current image into the other class (or ``to``); returns its new path."""
        item = self.queue.popleft()
        old = item.path
        try:
            self._move(item, to or _other(item.label or ""))
        except UserError:
            self.queue.appendleft(item)
            raise
        self.history.append((item, old))
        self.moved += 1
        return item.path

    def undo(self) -> Item | None:
        if not self.history:
            return None
        item, old = self.history.pop()
        if old is None:
            self.kept -= 1
        else:
            self._move(item, _label_of(self.root, old), old.parent)
            self.moved -= 1
        self.queue.appendleft(item)
        return item

    def _move(self, item: Item, to: str, folder: Path | None = None) -> None:
        old = item.path
        frm = _label_of(self.root, old)
        if folder is None:  # keep any sub-folders: female/a/b.jpg -> male/a/b.jpg
            folder = self.root / to / old.parent.relative_to(self.root / frm)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            new = free_name(folder, old)
            os.replace(old, new)
        except OSError as exc:
            raise UserError(f"cannot move {old} to {folder}: {exc.strerror or exc}") from exc
        old_rel, new_rel = old.relative_to(self.root).as_posix(), new.relative_to(self.root).as_posix()
        p = f"{item.prediction.p_female:.4f}" if item.prediction else ""
        try:
            append_log(self.log_path, [_now(), old_rel, frm, to, p, new_rel])
        except UserError:
            with contextlib.suppress(OSError):
                os.replace(new, old)  # no move the log does not know about
            raise
        item.path, item.label = new, to
        log.info("moved %s -> %s", old_rel, new_rel)
        _follow_in_state(self.root / STATE_NAME, old_rel, new_rel, to)

    def apply(self, action: str) -> str:
        item = self.current
        assert item is not None
        if action == "flip" or (action in LABELS and action != item.label):
            self.move(action if action in LABELS else None)
            return f"moved {item.path.name} to {item.label}/"
        if action in LABELS or action == "keep":
            self.keep()
            return f"kept {item.path.name} in {item.label}/"
        if action == "undo":
            undone = self.undo()
            return f"undone: {undone.path.name}" if undone else "nothing to undo"
        raise ValueError(f"unknown action {action!r}")

    def status(self, item: Item) -> list[Line]:
        lines = [(f"{self.total - len(self.queue) + 1} of {self.total}   moved {self.moved}   "
                  f"kept {self.kept}", WHITE)]
        p = item.prediction
        if p is not None:
            lines.append((f"filed as {item.label}   model: {p.label} {p.confidence:.0%}   "
                          f"p_female {p.p_female:.2f}", COLOURS[p.label]))
        lines.append((item.path.relative_to(self.root).as_posix(), GREY))
        return lines

    def title(self, item: Item) -> str:
        return f"{item.path.name} ({item.label})"

    def summary(self) -> None:
        log.info("summary: moved %d, kept %d, unreadable %d, left %d of %d (log: %s)", self.moved,
                 self.kept, len(self.unreadable), len(self.queue), self.total, self.log_path)
        _report_unreadable(self.unreadable)


def append_log(path: Path, row: Sequence[str]) -> None:
    """Append one row to the relabel log (with the header when the log is new), whole or not at all:
    a failed write is cut off again and raises :class:`UserError`."""
    text = io.StringIO()
    writer = csv.writer(text)
    try:
        if not path.exists() or path.stat().st_size == 0:
            writer.writerow(LOG_COLUMNS)
        writer.writerow(row)
        data = text.getvalue().encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            start = os.fstat(fd).st_size
            try:
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _disagreement(item: Item) -> float:
    if item.prediction is None:
        return 0.0
    p = item.prediction.p_female
    return 1.0 - p if item.label == "female" else p


def _label_of(root: Path, path: Path) -> str:
    return path.relative_to(root).parts[0]


def _follow_in_state(state_path: Path, old_rel: str, new_rel: str, label: str) -> None:
    """Point label-state entries whose copy was ``old_rel`` at ``new_rel`` (after a review move)."""
    if not state_path.exists():
        return
    entries = load_state(state_path)
    changed = False
    for entry in entries.values():
        if entry.get("dest") == old_rel:
            entry.update(decision=label, dest=new_rel, relabelled=_now())
            changed = True
    if changed:
        save_state(state_path, entries)


def _report_unreadable(paths: Sequence[Path]) -> None:
    if paths:
        names = ", ".join(p.name for p in paths[:20]) + (" ..." if len(paths) > 20 else "")
        log.warning("%d unreadable image(s) skipped: %s", len(paths), names)


# -- drawing ----------------------------------------------------------------------------------
def draw_text(image: np.ndarray, text: str, origin: tuple[int, int], colour: Colour = WHITE,
              scale: float = 0.6) -> None:
    """Text with a dark shadow, readable on any background (the runtime overlay's, thin stroke)."""
    overlay.draw_text(image, text, origin, scale, 1, colour)


def display_scale(width: int, height: int) -> float:
    """Shrink to fit MAX_W x MAX_H; enlarge small images until their long side is MIN_SIDE."""
    fit = min(MAX_W / width, MAX_H / height)
    if fit < 1.0:
        return fit
    return min(fit, max(1.0, MIN_SIDE / max(width, height)))


def render(image: np.ndarray, item: Item, lines: Sequence[Line], message: str, help_text: str
           ) -> np.ndarray:
    """The window's picture: scaled image, face boxes, status lines, message and key help."""
    h, w = image.shape[:2]
    scale = display_scale(w, h)
    view = image
    if scale != 1.0:
        interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        view = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                          interpolation=interp)
    vh, vw = view.shape[:2]
    canvas = np.full((max(vh, MIN_CANVAS_H), max(vw, MIN_CANVAS_W), 3), 40, np.uint8)
    canvas[:vh, :vw] = view
    faces = item.faces or []
    main = largest_box([f.box for f in faces])
    for i, face in enumerate(faces):
        x, y, bw, bh = (round(v * scale) for v in face.box)
        colour, thick = (GREEN, 2) if i == main else (GREY, 1)
        cv2.rectangle(canvas, (x, y), (x + bw, y + bh), (0, 0, 0), thick + 2)
        cv2.rectangle(canvas, (x, y), (x + bw, y + bh), colour, thick)
    if not faces:
        lines = [*lines, ("no face found: the model sees the whole image", COLOURS[UNCERTAIN])]
    y = 24
    for text, colour in lines:
        draw_text(canvas, text, (10, y), colour)
        y += 24
    if message:
        draw_text(canvas, message, (10, y), COLOURS[UNCERTAIN])
    draw_text(canvas, help_text, (10, canvas.shape[0] - 12), WHITE, 0.55)
    return canvas


# -- UI loop ------------------------------------------------------------------------------
def key_name(code: int) -> str | None:
    """Name of a key code from ``cv2.waitKey`` (None for no key)."""
    if code < 0:
        return None
    code &= 0xFF
    special = {10: "enter", 13: "enter", 9: "tab", 27: "esc", 32: "space", 8: "backspace",
               127: "backspace"}
    return special.get(code, chr(code).lower())


class CvWindow:
    """The default display: one OpenCV window titled with the file name."""

    def __init__(self) -> None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                     or os.environ.get("WAYLAND_DISPLAY")):
            raise UserError("no screen to show images on (DISPLAY is not set); the labelling tool "
                            "needs a desktop session")
        self._open = False

    def show(self, image: np.ndarray, title: str) -> None:
        if not self._open:
            cv2.namedWindow(WINDOW, cv2.WINDOW_AUTOSIZE)
            self._open = True
        cv2.imshow(WINDOW, image)
        cv2.setWindowTitle(WINDOW, f"{title} - label")

    def key(self) -> int:
        """Wait for a key; closing the window counts as Esc."""
        while True:
            code = cv2.waitKey(100)
            if code != -1:
                return code
            try:
                visible = cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) >= 1
            except cv2.error:  # the window is gone (Qt raises instead of answering 0)
                visible = False
            if not visible:
                self._open = False
                return 27

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                cv2.destroyWindow(WINDOW)
                cv2.waitKey(1)
            except cv2.error:
                log.debug("label window already closed")


def interact(session: _Queue, analyser: Analyser, key_source: KeySource, show: Show) -> None:
    """Show the current image, wait for a known key, act on it; until the queue is empty or quit."""
    message = ""
    while (item := session.current) is not None:
        image = analyser.load(item)
        if image is None:
            session.drop_unreadable(item)
            continue
        show(render(image, item, session.status(item), message, session.help), session.title(item))
        action = None
        while action is None:
            action = session.keys.get(key_name(key_source()) or "")
        if action == "quit":
            return
        message = session.apply(action)
        log.debug(message)


# -- CLI --------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--src", help="folder of unlabelled images (searched recursively; never changed)")
    parser.add_argument("--out", help="dataset folder to fill: OUT/female/, OUT/male/, OUT/" + STATE_NAME)
    parser.add_argument("--review", metavar="DATASET",
                        help="review a labelled DATASET (female/, male/) instead; needs --model")
    parser.add_argument("--model", help="gender .tflite (metadata .json beside it) to show its guess")
    parser.add_argument("--order", choices=ORDERS, default=None,
                        help="label order: confidence (most confident first; default with --model), "
                             "uncertain (least confident first) or name (default without --model)")
    parser.add_argument("--retry-skipped", action="store_true", help="show images skipped before again")
    parser.add_argument("--threads", type=positive_int, default=2, help="model threads (default 2)")


def run(args: argparse.Namespace, key_source: KeySource | None = None, show: Show | None = None) -> int:
    """Label or review; ``key_source``/``show`` replace the OpenCV window (tests, other front ends)."""
    if args.review:
        if args.src or args.out:
            raise UserError("--review works on one dataset: do not combine it with --src/--out")
        if not args.model:
            raise UserError("--review needs --model (images are ordered by disagreement with it)")
        session, order = _review_session(args)
    else:
        if not args.src or not args.out:
            raise UserError("give --src UNSORTED --out DATASET (or --review DATASET --model M.tflite)")
        session, order = _label_session(args)
    classifier = GenderClassifier(args.model, num_threads=args.threads) if args.model else None
    window = CvWindow() if key_source is None or show is None else None  # no screen: error, now
    if window is not None:
        key_source, show = key_source or window.key, show or window.show
    assert key_source is not None and show is not None
    try:
        with Analyser(classifier) as analyser:
            if order is not None and session.queue:
                analyse_all(session, analyser, "scoring")
                session.order(order)
            if session.current is not None:
                interact(session, analyser, key_source, show)
    finally:
        if window is not None:
            window.close()
    session.summary()
    return 0


def _label_session(args: argparse.Namespace) -> tuple[LabelSession, Callable[[Item], float] | None]:
    src, out = Path(args.src), Path(args.out)
    if not src.is_dir():
        raise UserError(f"source folder not found: {src}" if not src.exists() else f"{src} is not a folder")
    if src.resolve() == out.resolve():
        raise UserError("--src and --out must be different folders")
    for label in LABELS:  # OUT may lie inside SRC (it is left out of the list), SRC never inside OUT/LABEL
        target = (out / label).resolve()
        if src.resolve() == target or target in src.resolve().parents:
            raise UserError(f"--src {src} lies in {out / label}, where labelled copies go: the input would be "
                            "written; choose another --out")
    order = args.order or ("confidence" if args.model else "name")
    if order != "name" and not args.model:
        raise UserError(f"--order {order} needs --model")
    check_writable(out, "output folder")
    for label in LABELS:
        check_writable(out / label, "output folder")
    paths = list_images(src, exclude=out.resolve())
    if not paths:
        raise UserError(f"no images in {src} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    session = LabelSession(src, out, paths, retry_skipped=args.retry_skipped)
    log.info("%d images in %s, %d to label", session.total, src, len(session.queue))
    if order == "name":
        return session, None
    sign = -1.0 if order == "confidence" else 1.0
    return session, lambda item: sign * item.prediction.confidence if item.prediction else 0.0


def _review_session(args: argparse.Namespace) -> tuple[ReviewSession, Callable[[Item], float]]:
    root = Path(args.review)
    if not root.is_dir():
        raise UserError(f"dataset folder not found: {root}")
    items = [Item(d.path, d.gender) for d in folder_items(root)
             if not any(part.startswith(".") for part in d.path.relative_to(root).parts)]
    if not items:
        raise UserError(f"no images in {root}/female or {root}/male")
    for label in LABELS:
        check_writable(root / label, "dataset folder")
    load_state(root / STATE_NAME)  # a damaged state file stops the review now, not after a move
    # most disputed first: p(male) for images in female/, p(female) for images in male/
    return ReviewSession(root, items), lambda item: -_disagreement(item)
