"""The training CLI under bad input that needs no TensorFlow: damaged card inputs, a class with no
images, and images whose headers promise more pixels than the runtime's decode limit (issue 26.5)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures import png_bomb, run_training
from realtime_helpers import assert_one_error

from realtime.paths import GENDER_MODEL
from realtime.sources import read_image


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    model = tmp_path / "m.tflite"
    shutil.copy(GENDER_MODEL, model)
    shutil.copy(GENDER_MODEL.with_suffix(".json"), model.with_suffix(".json"))
    return model


def test_card_with_damaged_inputs_is_one_line(model_copy: Path, tmp_path: Path) -> None:
    card = ("card", "--model", str(model_copy), "--out", str(tmp_path / "card.md"))
    bad_json = tmp_path / "tradeoff.json"
    bad_json.write_text("{not json")
    assert_one_error(run_training(*card, "--tradeoff", str(bad_json), timeout=120), "--tradeoff", "not JSON")
    bad_json.write_text("[1, 2]")
    assert_one_error(run_training(*card, "--tradeoff", str(bad_json), timeout=120), "not a JSON object")
    history = tmp_path / "history.csv"
    history.write_bytes(bytes(range(256)) * 8)
    assert_one_error(run_training(*card, "--history", str(history), timeout=120), "--history",
                     "not a training history.csv")
    meta = json.loads(model_copy.with_suffix(".json").read_text())
    meta["metrics"]["test"] = "high"  # a hand-edited metadata file with the wrong types
    model_copy.with_suffix(".json").write_text(json.dumps(meta))
    assert_one_error(run_training(*card, timeout=120), "cannot write the card", "m.json")
    meta["metrics"] = [1, 2]
    model_copy.with_suffix(".json").write_text(json.dumps(meta))
    assert_one_error(run_training(*card, timeout=120), "no metrics")
    assert not (tmp_path / "card.md").exists()


def test_prepare_refuses_a_class_without_images(tmp_path: Path) -> None:
    data = tmp_path / "faces"
    (data / "female").mkdir(parents=True)
    (data / "male").mkdir()
    cv2.imwrite(str(data / "female" / "a.jpg"), np.full((64, 64, 3), 120, np.uint8))
    proc = run_training("prepare", "--folder", str(data), "--out", str(tmp_path / "cache"), timeout=120)
    assert_one_error(proc, "no male images")
    assert not (tmp_path / "cache" / "crops.npy").exists()


def test_training_reads_images_within_the_runtime_pixel_limit(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                              ) -> None:
    """prepare and evaluate read through read_image: a 1 MB PNG promising 400 Mpx is skipped, not decoded."""
    import resource

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(20_000, 20_000))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with caplog.at_level(logging.WARNING):
        assert read_image(bomb) is None
    assert "20000 x 20000 pixels" in caplog.text
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # kB: nothing was decoded
