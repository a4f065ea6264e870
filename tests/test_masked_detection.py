"""Faces wearing masks are found: real masked photos from ../shared (skipped when absent)."""

from __future__ import annotations

import pytest
from conftest import SHARED_DIR

from realtime.face_detector import StillImageDetector
from realtime.sources import IMAGE_EXTENSIONS, read_image

MASKED = SHARED_DIR / "data" / "masked_faces_unlabeled"
NO_FACE = {"with_mask315.jpg", "with_mask383.png", "with_mask631.jpeg"}  # mannequins, a drawing


@pytest.mark.shared
@pytest.mark.slow
def test_at_least_95_percent_of_masked_photos_have_a_face() -> None:
    if not MASKED.is_dir():
        pytest.skip(f"{MASKED} not available")
    files = sorted(p for p in MASKED.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.name not in NO_FACE)
    assert len(files) > 300
    with StillImageDetector(min_score=0.5) as detector:
        found = [bool(detector.detect(read_image(p))) for p in files]
    rate = sum(found) / len(files)
    print(f"masked photos with a face: {sum(found)}/{len(files)} = {rate:.1%}")
    assert rate >= 0.95
