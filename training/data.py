"""Datasets → face crops cache, made with the runtime's own detector and ``realtime.crop``.

A cache folder holds:
  crops.npy      N x S x S x 3 uint8, BGR, cropped with the metadata margin (``realtime.crop``)
  landmarks.npy  N x 468 x 2 float16, face-mesh points normalised to the crop (NaN when missing)
  meta.csv       one row per crop: index, file, gender, age, race, source, det_score, group, split
  report.json    images read, faces found, skipped images and why, split sizes
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from realtime.crop import DEFAULT_MARGIN, crop_face, resize_square
from realtime.errors import UserError
from realtime.face_detector import FaceDetector
from realtime.sources import IMAGE_EXTENSIONS, read_image

from .landmarks import LANDMARK_MARGIN, FaceLandmarks, rescale_points

log = logging.getLogger(__name__)

LABELS = ("female", "male")
# Dataset photos that are already tight face crops (UTKFace) leave the detector no room: pad them
# by this share of their size (edge pixels repeated) before detection and cropping.
PAD_FRACTION = 0.5


@dataclass
class Item:
    path: Path
    gender: str
    age: int | None = None
    race: str | None = None
    source: str = ""
    group: str = ""
    split: str = ""  # "val"/"test" for faces from an explicit --val/--test folder


def stratified_sample(items: list[Item], n: int, seed: int) -> list[Item]:
    """``n`` items drawn at random with ``seed``, each label in proportion to its share (a plain
    slice of a sorted list would take the first label only)."""
    import random

    if n >= len(items):
        return list(items)
    rng = random.Random(seed)
    by_label: dict[str, list[Item]] = {}
    for item in items:
        by_label.setdefault(item.gender, []).append(item)
    out: list[Item] = []
    labels = sorted(by_label)
    for k, label in enumerate(labels):
        group = by_label[label]
        take = n - len(out) if k == len(labels) - 1 else round(n * len(group) / len(items))
        out += rng.sample(group, min(take, len(group)))
    log.info("--limit %d: sampled %s", n, ", ".join(f"{sum(i.gender == lab for i in out)} {lab}" for lab in labels))
    return out


def describe_data(args: object, items: list[Item]) -> dict:
    """What the data is, for the metadata and the card: name, licence, counts, where it came from."""
    utk = bool(getattr(args, "utkface", None))
    folders = [*(getattr(args, "folder", None) or []), *(getattr(args, "val", None) or []),
               *(getattr(args, "test", None) or [])]
    name = getattr(args, "data_name", None) or " + ".join(
        (["UTKFace"] if utk else []) + [Path(f).name for f in folders])
    licence = getattr(args, "data_licence", None) or (
        "UTKFace: non-commercial research only" if utk and not folders else
        "not stated (give --data-licence)")
    return {"name": name, "licence": licence, "sources": (["utkface"] if utk else []) + [str(f) for f in folders],
            "images": len(items), "by_label": {lab: sum(i.gender == lab for i in items) for lab in LABELS},
            "has_ages": any(i.age is not None for i in items)}


@dataclass
class Record:
    index: int
    file: str
    gender: str
    age: int | str
    race: str
    source: str
    det_score: float
    group: str
    split: str = ""


def folder_items(root: Path) -> list[Item]:
    """Images under ``root/female`` and ``root/male`` (any depth, known image extensions)."""
    items = []
    for label in LABELS:
        sub = root / label
        if not sub.is_dir():
            raise UserError(f"{root} has no {label}/ folder (expected female/ and male/)")
        for path in sorted(sub.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                items.append(Item(path, label, source=root.name, group=str(path.relative_to(root))))
    return items


def utkface_items(root: Path) -> tuple[list[Item], dict[str, int]]:
    """UTKFace rows from ``labels.csv``; duplicate groups share one ``group`` id.

    Groups whose copies disagree on gender are dropped (reported in the returned counts).
    """
    labels = root / "labels.csv"
    if not labels.is_file():
        raise UserError(f"{labels} not found (UTKFace needs labels.csv with file,age,gender,race)")
    dup_group: dict[str, str] = {}
    conflict: set[str] = set()
    dups = root / "duplicates.csv"
    if dups.is_file():
        with dups.open(newline="") as fh:
            for row in csv.DictReader(fh):
                dup_group[row["file"]] = row["sha1"]
                if row.get("gender_conflict", "0") == "1":
                    conflict.add(row["sha1"])
    items, dropped = [], Counter()
    with labels.open(newline="") as fh:
        for row in csv.DictReader(fh):
            group = dup_group.get(row["file"], row["file"])
            if group in conflict:
                dropped["gender_conflict_duplicate"] += 1
                continue
            items.append(Item(root / "images" / row["file"], row["gender"], int(row["age"]),
                              row["race"], source="utkface", group=group))
    return items, dict(dropped)


def context_margin(margin: float, context: float) -> float:
    """The crop margin of a window ``context`` times as wide as the runtime crop of ``margin``."""
    return (1.0 + margin) * context - 1.0


def crops_from_items(
    items: list[Item], size: int, margin: float = DEFAULT_MARGIN, pad: float = PAD_FRACTION,
    with_landmarks: bool = True, context: float = 1.0,
) -> Iterator[tuple[Item, np.ndarray | None, np.ndarray | None, float, str]]:
    """Yield ``(item, crop, landmarks, det_score, skip_reason)``; crop is None when skipped.

    Why not the runtime's still-image detector (``StillImageDetector``, which ``evaluate``, the
    labelling tool and the CLI use for photos): a dataset photo is one tight, aligned face, so one
    short-range pass on the photo padded with repeated edges (as training crops are) finds it, and
    a single fixed detector keeps the prepared cache (and so the split) the same across runs.

    ``context`` > 1 cuts a window that many times wider than the runtime crop (same centre), so
    training can re-frame faces looser and tighter than the detector's box (see :meth:`Cache.view`).
    """
    margin = context_margin(margin, context)
    landmarker = FaceLandmarks() if with_landmarks else None
    with FaceDetector("short", mode="image", min_score=0.5) as detector:
        for item in items:
            image = read_image(item.path)
            if image is None:
                yield item, None, None, 0.0, "unreadable"
                continue
            p = int(round(max(image.shape[:2]) * pad))
            padded = cv2.copyMakeBorder(image, p, p, p, p, cv2.BORDER_REPLICATE) if p else image
            faces = detector.detect(padded)
            if faces:
                image = padded
            elif p:  # padding shrinks a face that does not fill the photo out of the detector's range
                faces = detector.detect(image)
            if not faces:
                yield item, None, None, 0.0, "no_face"
                continue
            face = faces[0]  # largest
            crop = crop_face(image, face.crop_box, size, margin)
            points = None
            if landmarker is not None:
                mesh, flag = landmarker(image, face.crop_box)
                points = rescale_points(mesh, LANDMARK_MARGIN, margin) if flag > 0 else None
            yield item, crop, points, face.score, ""


def prepare(
    items: list[Item], out: Path, size: int = 128, margin: float = DEFAULT_MARGIN,
    extra_report: dict | None = None, context: float = 1.0, split_seed: int | None = None,
    fractions: dict[str, float] | None = None,
) -> dict:
    """Detect, crop and cache ``items`` into ``out``; returns the report (also saved).

    ``size`` is the side of the runtime crop inside each cached window; the cached window is
    ``round(size * context)`` px and holds ``context`` times the runtime crop's width.
    """
    out.mkdir(parents=True, exist_ok=True)
    crops, marks, records = [], [], []
    skipped: Counter[str] = Counter()
    skipped_examples: dict[str, list[str]] = {}
    for item, crop, points, score, reason in tqdm(
        crops_from_items(items, int(round(size * context)), margin, context=context), total=len(items),
        desc="prepare", unit="img"
    ):
        if crop is None:
            skipped[reason] += 1
            skipped_examples.setdefault(reason, [])
            if len(skipped_examples[reason]) < 10:
                skipped_examples[reason].append(str(item.path))
            continue
        records.append(Record(len(records), str(item.path), item.gender,
                              "" if item.age is None else item.age, item.race or "", item.source,
                              round(score, 4), item.group, item.split))
        crops.append(crop)
        marks.append(points if points is not None else np.full((468, 2), np.nan, np.float32))
    if not records:
        raise UserError("no faces found in any image; nothing to cache")
    from .split import SEED, assign_splits

    free = [r for r in records if not r.split]  # faces of explicit --val/--test folders keep their split
    assign_splits(free, SEED if split_seed is None else split_seed, fractions)
    for split in ("train", "val"):
        if not any(r.split == split for r in records):
            raise UserError(f"the {split} split is empty ({len(records)} faces); use more images, or other "
                            "--val-fraction/--test-fraction, or give --val DIR")
    _save_array(out / "crops.npy", np.stack(crops))
    _save_array(out / "landmarks.npy", np.stack(marks).astype(np.float16))
    write_meta(out / "meta.csv", records)
    report = {
        "images_read": len(items),
        "faces_found": len(records),
        "skipped": dict(skipped),
        "skipped_examples": skipped_examples,
        "landmarks_found": int(sum(not np.isnan(m[0, 0]) for m in marks)),
        "crop_size": size,
        "crop_margin": margin,
        "crop_context": context,
        "split_sizes": dict(Counter(r.split for r in records)),
        **(extra_report or {}),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _save_array(path: Path, array: np.ndarray) -> None:
    tmp = path.with_suffix(".partial.npy")
    np.save(tmp, array)
    tmp.replace(path)


def write_meta(path: Path, records: list[Record]) -> None:
    tmp = path.with_suffix(".partial")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(asdict(records[0]).keys()))
        writer.writeheader()
        writer.writerows(asdict(r) for r in records)
    tmp.replace(path)


@dataclass
class Cache:
    """A prepared cache loaded into memory.

    ``crops`` are windows ``context`` times as wide as the runtime crop (1.0 in older caches);
    ``landmarks`` are normalised to those windows. :meth:`view` cuts the runtime crop (or a looser
    or tighter one) out of a window.
    """

    crops: np.ndarray
    landmarks: np.ndarray
    meta: list[dict[str, str]]
    context: float = 1.0
    margin: float = DEFAULT_MARGIN  # the runtime crop's margin the cache was made with (report.json)

    @property
    def crop_size(self) -> int:
        """Side in px of the runtime crop inside a cached window."""
        return int(round(self.crops.shape[1] / self.context))

    def view(self, idx: int, scale: float = 1.0, window: np.ndarray | None = None) -> np.ndarray:
        """The centred square crop ``scale`` times the runtime crop (1.0 = exactly the runtime
        crop, 1.2 = 20 % looser), at :attr:`crop_size` px. ``window`` replaces the cached window
        (e.g. a masked copy of it)."""
        return centre_view(np.asarray(self.crops[idx]) if window is None else window,
                           self.context, scale, self.crop_size)

    def ages(self) -> np.ndarray:
        """Age in years per crop (NaN when unknown)."""
        return np.array([float(r["age"]) if r.get("age") not in ("", None) else np.nan for r in self.meta],
                        dtype=np.float32)

    def indices(self, split: str, min_age: int | None = None, max_age: int | None = None
                ) -> np.ndarray:
        keep = []
        for i, row in enumerate(self.meta):
            if row["split"] != split:
                continue
            age = int(row["age"]) if row["age"] not in ("", None) else None
            if min_age is not None and age is not None and age < min_age:
                continue
            if max_age is not None and (age is None or age > max_age):
                continue
            keep.append(i)
        return np.array(keep, dtype=np.int64)

    def labels(self) -> np.ndarray:
        """1 for female, 0 for male (the model's single output is p_female)."""
        return np.array([1 if r["gender"] == "female" else 0 for r in self.meta], dtype=np.int64)


def load_cache(path: Path, mmap: bool = True) -> Cache:
    for name in ("crops.npy", "landmarks.npy", "meta.csv"):
        if not (path / name).is_file():
            raise UserError(f"{path} is not a prepared cache (missing {name}); run `python -m training prepare`")
    with (path / "meta.csv").open(newline="") as fh:
        meta = list(csv.DictReader(fh))
    mode = "r" if mmap else None
    context, margin = 1.0, DEFAULT_MARGIN
    report = path / "report.json"
    if report.is_file():
        try:
            described = json.loads(report.read_text())
            context = float(described.get("crop_context", 1.0))
            margin = float(described.get("crop_margin", DEFAULT_MARGIN))
        except (ValueError, TypeError, AttributeError) as exc:
            raise UserError(f"{report}: not a valid cache report ({exc})") from exc
        if not 1.0 <= context <= 4.0:
            raise UserError(f"{report}: crop_context {context} is outside 1..4")
    return Cache(np.load(path / "crops.npy", mmap_mode=mode), np.load(path / "landmarks.npy", mmap_mode=mode),
                 meta, context, margin)


def centre_view(window: np.ndarray, context: float, scale: float, size: int) -> np.ndarray:
    """A centred square of ``scale / context`` of ``window``'s side (edges repeated where it
    reaches past the window), resized to ``size`` px with the runtime's resize."""
    side = window.shape[0]
    crop_side = side * scale / context
    if abs(crop_side - side) < 0.5:
        return resize_square(window, size)
    c = side / 2.0
    x0 = int(round(c - crop_side / 2.0))
    s = max(1, int(round(crop_side)))
    if x0 >= 0 and x0 + s <= side:
        return resize_square(window[x0:x0 + s, x0:x0 + s], size)
    p = max(0, -x0, x0 + s - side)
    padded = cv2.copyMakeBorder(window, p, p, p, p, cv2.BORDER_REPLICATE)
    return resize_square(padded[x0 + p:x0 + p + s, x0 + p:x0 + p + s], size)
