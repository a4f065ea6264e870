"""``training.data``: folder datasets → a cache of runtime-made face crops, landmarks and splits."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures import FaceDataset

from realtime.crop import crop_face
from realtime.errors import UserError
from realtime.face_detector import FaceDetector
from training.data import folder_items, load_cache


def test_folder_items_labels_by_folder(face_dataset: FaceDataset) -> None:
    items = folder_items(face_dataset.root)
    by_label = Counter(item.gender for item in items)
    assert by_label == {"female": face_dataset.per_class + 2, "male": face_dataset.per_class + 1}
    assert all(item.path.parent.name == item.gender for item in items)
    assert len({item.group for item in items}) == len(items)


def test_folder_items_needs_both_folders(tmp_path: Path) -> None:
    (tmp_path / "female").mkdir()
    with pytest.raises(UserError, match="male/"):
        folder_items(tmp_path)


def test_prepare_report_counts_skips(prepared_cache: Path, face_dataset: FaceDataset) -> None:
    report = json.loads((prepared_cache / "report.json").read_text())
    # Every face is found, also where the face fills only a small part of the photo.
    assert report["faces_found"] == len(face_dataset.faces)
    assert report["skipped"] == {"no_face": 1, "unreadable": 2}
    assert report["landmarks_found"] == len(face_dataset.faces)
    assert report["crop_size"] == 64 and report["crop_margin"] == pytest.approx(0.1)


def test_cache_holds_runtime_crops(prepared_cache: Path, face_dataset: FaceDataset) -> None:
    cache = load_cache(prepared_cache)
    n = len(face_dataset.faces)
    assert cache.crops.shape == (n, 64, 64, 3) and cache.crops.dtype == np.uint8
    assert cache.landmarks.shape == (n, 468, 2) and np.isfinite(cache.landmarks).all()
    assert len(cache.meta) == n
    # The cached crop is THE runtime crop of the detected face (here: an unpadded photo).
    row = next(r for r in cache.meta if r["file"].endswith(".png"))
    image = cv2.imread(row["file"], cv2.IMREAD_COLOR)
    with FaceDetector("short", mode="image") as detector:
        box = detector.detect(image)[0].crop_box
    expected = crop_face(image, box, 64, 0.1)
    assert np.abs(cache.crops[int(row["index"])].astype(int) - expected.astype(int)).max() <= 1


def test_cache_splits_are_stratified(prepared_cache: Path) -> None:
    with (prepared_cache / "meta.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    per_split = Counter((r["split"], r["gender"]) for r in rows)
    for split in ("train", "val", "test"):
        assert per_split[(split, "female")] == per_split[(split, "male")] >= 1, per_split
    cache = load_cache(prepared_cache)
    assert len(cache.indices("train")) + len(cache.indices("val")) + len(cache.indices("test")) == len(rows)
    assert set(cache.labels()) == {0, 1}


def test_load_cache_rejects_other_folders(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a prepared cache"):
        load_cache(tmp_path)
