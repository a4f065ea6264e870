"""One rule for every command (realtime.files.check_outputs): no output writes an input, and no two
outputs write one file, ``--force`` included. Each case was once a silent overwrite (issue 26.1)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures import run_training
from realtime_helpers import assert_one_error, run_realtime, synthetic_frames, write_clip

from realtime.errors import UserError
from realtime.files import Output, check_outputs
from realtime.paths import GENDER_MODEL


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the rule itself -------------------------------------------------------------------------------
def test_two_file_outputs_naming_one_file_are_refused(tmp_path: Path) -> None:
    a = tmp_path / "a.json"
    with pytest.raises(UserError, match="--jsonl and --summary both name"):
        check_outputs([Output("--jsonl", a), Output("--summary", tmp_path / "." / "a.json")])
    link = tmp_path / "link.json"
    a.write_text("{}")
    link.symlink_to(a)
    with pytest.raises(UserError, match="both name"):
        check_outputs([Output("--jsonl", a), Output("--summary", link)])
    check_outputs([Output("--jsonl", a), Output("--summary", tmp_path / "b.json")])  # distinct: fine


def test_a_file_output_among_a_folders_planned_files_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    folder = Output("--output", out, folder=True, files=(out / "a.jpg", out / "contact_sheet.jpg"))
    for name in ("a.jpg", "contact_sheet.jpg"):
        with pytest.raises(UserError, match="is also written by --output"):
            check_outputs([folder, Output("--jsonl", out / name)])
    check_outputs([folder, Output("--jsonl", out / "faces.jsonl")])  # a name the folder does not use
    with pytest.raises(UserError, match="is the output folder"):
        check_outputs([folder, Output("--jsonl", out)])
    unknown = Output("--snapshots", tmp_path / "shots", folder=True)
    with pytest.raises(UserError, match="inside the output folder"):
        check_outputs([unknown, Output("--jsonl", tmp_path / "shots" / "x.jsonl")])


def test_nested_output_folders_and_streams(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="one folder or nested"):
        check_outputs([Output("--a", tmp_path / "x", folder=True), Output("--b", tmp_path / "x" / "y", folder=True)])
    # Streams are never replaced: two outputs on stdout or /dev/null are fine.
    check_outputs([Output("--jsonl", "-"), Output("--summary", "-"), Output("--output", "/dev/null")])


# -- the realtime CLI --------------------------------------------------------------------------------
def test_realtime_outputs_never_replace_the_input_or_each_other(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "in.mp4", synthetic_frames(4))
    before = digest(clip)
    cases = [
        (("--summary", str(clip)), "is the input"),
        (("--output", str(tmp_path / "o.mp4"), "--summary", str(tmp_path / "o.mp4")), "both name"),
        (("--jsonl", str(tmp_path / "j.jsonl"), "--summary", str(tmp_path / "j.jsonl")), "both name"),
        (("--output", str(tmp_path / "o.mp4"), "--jsonl", str(tmp_path / "o.mp4")), "both name"),
    ]
    for args, needle in cases:
        assert_one_error(run_realtime("--source", str(clip), *args), needle)
    assert digest(clip) == before
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "j.jsonl").exists()


def test_realtime_folder_outputs_keep_their_own_files(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.jpg"), np.full((80, 80, 3), 128, np.uint8))
    out = tmp_path / "out"
    assert_one_error(run_realtime("--source", str(photos), "--output", str(out), "--jsonl",
                                  str(out / "contact_sheet.jpg")), "is also written by --output")
    assert_one_error(run_realtime("--source", str(photos), "--output", str(out), "--summary", str(out / "a.jpg")),
                     "is also written by --output")
    assert not out.exists() or not any(out.iterdir())
    # An input named like the contact sheet would be replaced by the sheet.
    cv2.imwrite(str(photos / "contact_sheet.jpg"), np.full((80, 80, 3), 50, np.uint8))
    assert_one_error(run_realtime("--source", str(photos), "--output", str(out)), "contact_sheet.jpg")


# -- the training CLI --------------------------------------------------------------------------------
@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    shipped = GENDER_MODEL
    model = tmp_path / "m.tflite"
    shutil.copy(shipped, model)
    shutil.copy(shipped.with_suffix(".json"), model.with_suffix(".json"))
    return model


def test_card_never_writes_the_models_own_files(model_copy: Path) -> None:
    meta = model_copy.with_suffix(".json")
    before = digest(meta), digest(model_copy)
    for target in (meta, model_copy):
        proc = run_training("card", "--model", str(model_copy), "--out", str(target), "--force", timeout=120)
        assert_one_error(proc, "is the input")
    assert (digest(meta), digest(model_copy)) == before


def test_evaluate_report_never_lands_on_its_inputs(model_copy: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "female").mkdir(parents=True)
    (data / "male").mkdir()
    proc = run_training("evaluate", "--model", str(model_copy), "--data", str(data), "--report",
                        str(model_copy.with_suffix(".json")), timeout=120)
    assert_one_error(proc, "is the input")
    proc = run_training("evaluate", "--model", str(model_copy), "--data", str(data), "--report",
                        str(data / "report.json"), timeout=120)
    assert_one_error(proc, "overlaps the input")
