"""A batch's inputs and their names: the videos a folder, a glob or a list file names
(:func:`collect_inputs`), and one output folder per video (:func:`output_folders`)."""

from __future__ import annotations

import glob
import logging
import os
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import UserError
from ..files import Output, check_outputs

log = logging.getLogger("realtime.batch")

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
VIDEO_NAME, JSONL_NAME, SUMMARY_NAME, THUMB_NAME = "annotated.mp4", "faces.jsonl", "summary.json", "thumbnail.jpg"
RESERVED = frozenset({"summary.csv", "summary.json", "report.html", "report_files"})


@dataclass(frozen=True)
class VideoInput:
    path: Path  # absolute
    rel: str  # relative to the input's base, POSIX form: how the video is named in every output
    folder: str  # OUTPUT/<folder>/ holds its outputs


def _check_output(output: Path, inputs: list[Path]) -> None:
    """OUTPUT under the rule of every command (:func:`realtime.files.check_outputs`): it may not be,
    hold or lie inside a folder the batch reads (the input folder, the folder a ``**`` glob
    searches), nor hold a file it reads (a video, the list file). A folder the batch does not search
    (a single video's, a plain glob's) may hold OUTPUT."""
    check_outputs([Output("--output", output, folder=True)], inputs)


def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


def collect_inputs(spec: str, output: Path) -> list[VideoInput]:
    """Videos named by a folder (recursive), a glob pattern or a list file (one path per line).

    Each video is named (``rel``, and its output folder) by the path it was found at, links
    included; it is read at its real path. Two names of one file (a link beside its target, a
    hard link) are annotated once, with a ``warning:`` line. ``output`` is checked against all
    that is read (:func:`_check_output`)."""
    if not spec.strip():
        raise UserError("--input is empty: give a folder, a glob pattern, a list file or a video "
                        "(use . for the current folder)")
    path = Path(spec).expanduser()
    read: list[Path] = []  # what the batch reads besides the videos: the folder it searches, the list file
    if path.is_dir():
        base = path
        read.append(path)
        _check_output(output, read)  # before the walk (OUTPUT's own videos would be found)
        files = sorted(p for p in path.rglob("*") if _is_video(p)
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise UserError(f"no videos ({', '.join(sorted(VIDEO_EXTENSIONS))}) in {path}")
    elif path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
        base, files = path.parent, [path]
    elif path.is_file():
        read.append(path)
        files = _read_list(path)
        base = Path(os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files]))
    elif glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True) if is_regular(Path(p)))
        if not files:
            raise UserError(f"no files match {spec}")
        head = []
        for part in Path(os.path.expanduser(spec)).parts:
            if glob.has_magic(part):
                break
            head.append(part)
        base = Path(*head) if head else Path(".")
        if "**" in spec:  # it searches base's whole tree
            read.append(base)
    else:
        raise UserError(f"input {spec} does not exist (give a folder, a glob pattern or a list file)")
    base_abs = os.path.abspath(base)
    named = [(Path(os.path.abspath(f)), f.resolve()) for f in files]  # (as found, real file)
    _check_output(output, [*read, *(real for _, real in named)])
    unique = _one_name_per_file(named, base_abs)
    rels = [Path(os.path.relpath(found, base_abs)).as_posix() for found, _ in unique]
    return [VideoInput(real, rel, folder) for (_, real), rel, folder in zip(unique, rels, output_folders(rels))]


def is_regular(path: Path) -> bool:
    """A regular file (links followed): never a FIFO, a device or a socket, which would block or
    never end when read."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def _one_name_per_file(named: list[tuple[Path, Path]], base: str) -> list[tuple[Path, Path]]:
    """Drop the second and later names of one file (links, hard links), keeping the file's real
    name when it is among them, else the first; one ``warning:`` line per name dropped."""
    groups: dict[tuple[int, int] | Path, list[int]] = {}
    for i, (_, real) in enumerate(named):
        try:
            st = real.stat()
            key: tuple[int, int] | Path = (st.st_dev, st.st_ino)
        except OSError:
            key = real
        groups.setdefault(key, []).append(i)
    keep: set[int] = set()
    for members in groups.values():
        chosen = next((i for i in members if named[i][0] == named[i][1]), members[0])
        keep.add(chosen)
        for i in members:
            if i != chosen:
                log.warning("%s is the same file as %s (a link): annotated once", os.path.relpath(named[i][0], base),
                            os.path.relpath(named[chosen][0], base))
    return [n for i, n in enumerate(named) if i in keep]


def _read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the list file {path}: {exc}") from exc
    files, missing = [], []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        f = Path(line).expanduser()
        f = f if f.is_absolute() else path.parent / f
        (files if is_regular(f) else missing).append(f)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise UserError(f"{path} names {len(missing)} missing file(s) (or not regular files): {missing[0]}{more}")
    if not files:
        raise UserError(f"the list file {path} names no videos")
    return list(dict.fromkeys(Path(os.path.abspath(f)) for f in files))


# Names a video's folder may not take: the aggregate outputs at the top, a video's own files
# anywhere (a video's folder can hold another's: cam1.mp4 -> cam1/, cam1/b.mp4 -> cam1/b/).
_TOP_RESERVED = frozenset(n.casefold() for n in RESERVED)
_FILE_RESERVED = frozenset(n.casefold() for n in (VIDEO_NAME, JSONL_NAME, SUMMARY_NAME, THUMB_NAME))


def _clean(name: str) -> str:
    """``name`` with every component that would take an output's place made harmless."""
    parts = name.split("/")
    for i, part in enumerate(parts):
        if part.casefold() in _FILE_RESERVED or (i == 0 and part.casefold() in _TOP_RESERVED):
            parts[i] = part.replace(".", "_") if "." in part else f"{part}_"
    return "/".join(parts)


def output_folders(rels: list[str]) -> list[str]:
    """One output folder per video, never the same for two (also where case is ignored, as on
    macOS and Windows shares): ``cam1/a.mp4`` → ``cam1/a``; a name whose stem repeats in its folder
    keeps its extension (``a.mp4``, ``a.avi`` → ``a_mp4``, ``a_avi``), and a name still taken gets a
    number (``a_mp4.mov`` beside those → ``a_mp4_mov``, then ``a_mp4_mov_2``...). Depends only on
    the set of names, so a rerun over the same inputs finds the same folders."""
    def dotted(rel: str) -> str:
        pure = PurePosixPath(rel)
        return _clean(str(pure.with_name(pure.name.replace(".", "_"))))

    stems = [_clean(str(PurePosixPath(r).with_suffix(""))) for r in rels]
    stem_count = Counter(s.casefold() for s in stems)
    natural = [stem if stem_count[stem.casefold()] == 1 else dotted(rel) for rel, stem in zip(rels, stems)]
    natural_count = Counter(n.casefold() for n in natural)
    out: list[str | None] = [n if natural_count[n.casefold()] == 1 else None for n in natural]
    taken = {n.casefold() for n in out if n is not None}
    for i in sorted(range(len(rels)), key=lambda k: rels[k]):
        if out[i] is not None:
            continue
        first = candidate = dotted(rels[i])
        k = 1
        while candidate.casefold() in taken:
            k += 1
            candidate = f"{first}_{k}"
        out[i] = candidate
        taken.add(candidate.casefold())
        if candidate != natural[i]:
            log.info("%s: outputs in %s/ (%s/ is another video's)", rels[i], candidate, natural[i])
    return [n for n in out if n is not None]

