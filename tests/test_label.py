"""``python -m training label``: driven headless with scripted keys and a display that records."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import sys
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.errors import UserError
from training.__main__ import build_parser, main
from training.label import LOG_COLUMNS, LOG_NAME, MAX_H, MAX_W, STATE_NAME, Item, render, run

META = {"input_size": 32, "colour_order": "BGR", "crop_margin": 0.1,
        "labels": {"positive": "female", "negative": "male"}, "threshold": 0.5,
        "uncertain_band": [0.4, 0.6]}


# -- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photo with one face the short-range detector finds (ships with the package)."""
    from realtime.paths import SAMPLE_FACE

    image = cv2.imread(str(SAMPLE_FACE))
    assert image is not None
    return image


def variants(photo: np.ndarray) -> dict[str, np.ndarray]:
    """Brightness variants: the test model below calls bright faces female, dark ones male."""
    return {
        "pale.jpg": cv2.convertScaleAbs(photo, alpha=0.4, beta=150),  # p_female ~0.99
        "dark.jpg": cv2.convertScaleAbs(photo, alpha=0.4),  # ~0.08
        "orig.jpg": photo,  # ~0.79
        # no face: the model sees the whole (uniform) image: mean 100, p_female 0.5, uncertain
        "gray.png": np.full((200, 200, 3), 100, np.uint8),
    }


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny int8 model with the real one's interface: p_female = sigmoid(0.05 * (mean - 100)).

    Built rather than taken from models/ so the tests know what it will say about each image.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow")
    keras = tf.keras
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(1, activation="sigmoid")
    net = keras.Model(inputs, dense(x))
    dense.set_weights([np.full((3, 1), 0.05 / 3, np.float32), np.array([-5.0], np.float32)])

    from training.export import int8_tflite

    path = tmp_path_factory.mktemp("model") / "tiny_int8.tflite"
    path.write_bytes(int8_tflite(net, [np.full((1, 32, 32, 3), v, np.float32) for v in np.linspace(0, 255, 32)]))
    path.with_suffix(".json").write_text(json.dumps(META))
    return path


@pytest.fixture
def src(tmp_path: Path, photo: np.ndarray) -> Path:
    folder = tmp_path / "unsorted"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), photo)
    cv2.imwrite(str(folder / "b.png"), cv2.flip(photo, 1))
    cv2.imwrite(str(folder / "c.jpg"), cv2.resize(photo, (256, 300)))
    return folder


@pytest.fixture
def model_src(tmp_path: Path, photo: np.ndarray) -> Path:
    folder = tmp_path / "unsorted"
    folder.mkdir()
    for name, image in variants(photo).items():
        cv2.imwrite(str(folder / name), image)
    return folder


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="training.label")


# -- helpers ------------------------------------------------------------------------------
def drive(argv: list[str], keys: str) -> tuple[int, list[str]]:
    """Run the tool on ``argv`` pressing ``keys`` (then q); returns the exit code and window titles."""
    args = build_parser().parse_args(["label", *argv])
    script = iter(keys)
    titles: list[str] = []

    def show(image: np.ndarray, title: str) -> None:
        assert image.ndim == 3 and image.dtype == np.uint8
        titles.append(title)

    return run(args, key_source=lambda: ord(next(script, "q")), show=show), titles


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def state(out: Path) -> dict:
    return json.loads((out / STATE_NAME).read_text())


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def no_screen(*_: object) -> None:
    raise AssertionError("nothing may be shown")


# -- label mode -----------------------------------------------------------------------------
def test_copies_land_in_class_folders_and_sources_stay(src: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    before = digests(src)
    out = tmp_path / "dataset"
    rc, titles = drive(["--src", str(src), "--out", str(out)], "fms")
    assert rc == 0
    assert titles == ["a.jpg", "b.png", "c.jpg"]
    assert files(out / "female") == ["a.jpg"]
    assert files(out / "male") == ["b.png"]
    assert (out / "female" / "a.jpg").read_bytes() == (src / "a.jpg").read_bytes()
    assert digests(src) == before  # copied, never moved or changed
    assert "female 1, male 1; skipped 1; unreadable 0; left 0 of 3" in caplog.text


def test_state_file_records_each_decision(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    drive(["--src", str(src), "--out", str(out)], "fs")
    data = state(out)
    assert data["version"] == 1
    entries = data["entries"]
    assert list(entries) == [str(src / "a.jpg"), str(src / "b.png")]  # in decision order
    assert entries[str(src / "a.jpg")]["decision"] == "female"
    assert entries[str(src / "a.jpg")]["dest"] == "female/a.jpg"
    assert entries[str(src / "b.png")] == {"decision": "skip", "dest": None,
                                             "time": entries[str(src / "b.png")]["time"]}
    for entry in entries.values():
        assert datetime.fromisoformat(entry["time"]).tzinfo is not None
    assert not [p for p in out.rglob("*") if p.name.endswith((".tmp", ".part"))]  # atomic writes


def test_resume_after_quit_continues_at_next_unlabelled(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    argv = ["--src", str(src), "--out", str(out)]
    _, first = drive(argv, "fq")
    assert first == ["a.jpg", "b.png"]
    rc, second = drive(argv, "m")
    assert rc == 0
    assert second == ["b.png", "c.jpg"]  # a.jpg is not shown again
    assert files(out / "female") == ["a.jpg"]
    assert files(out / "male") == ["b.png"]
    assert [e["decision"] for e in state(out)["entries"].values()] == ["female", "male"]
    _, third = drive([*argv, "--retry-skipped"], "")
    assert third == ["c.jpg"]


def test_undo_removes_the_copy_and_shows_the_image_again(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    argv = ["--src", str(src), "--out", str(out)]
    _, titles = drive(argv, "fum")
    assert titles == ["a.jpg", "b.png", "a.jpg", "b.png"]
    assert files(out / "female") == []
    assert files(out / "male") == ["a.jpg"]
    assert {k: e["decision"] for k, e in state(out)["entries"].items()} == {str(src / "a.jpg"): "male"}
    # undo also works after a restart: it reverts the last decision of the earlier run
    _, titles = drive(argv, "u")
    assert titles[:2] == ["b.png", "a.jpg"]
    assert files(out / "male") == []
    assert state(out)["entries"] == {}


def test_name_clash_gets_a_hash_suffix(tmp_path: Path, photo: np.ndarray) -> None:
    src = tmp_path / "unsorted"
    for sub, image in (("x", photo), ("y", cv2.flip(photo, 1))):
        (src / sub).mkdir(parents=True)
        cv2.imwrite(str(src / sub / "face.jpg"), image)
    out = tmp_path / "dataset"
    drive(["--src", str(src), "--out", str(out)], "ff")
    names = files(out / "female")
    assert len(names) == 2 and "face.jpg" in names
    other = next(n for n in names if n != "face.jpg")
    assert other.startswith("face-") and other.endswith(".jpg") and len(other) == len("face-12345678.jpg")


def test_unreadable_image_is_skipped_and_reported(src: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    (src / "b2-broken.jpg").write_bytes(b"this is not a jpeg")
    out = tmp_path / "dataset"
    rc, titles = drive(["--src", str(src), "--out", str(out)], "fff")
    assert rc == 0
    assert titles == ["a.jpg", "b.png", "c.jpg"]
    assert files(out / "female") == ["a.jpg", "b.png", "c.jpg"]
    assert str(src / "b2-broken.jpg") not in state(out)["entries"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("unreadable" in m and "b2-broken.jpg" in m for m in warnings)
    assert "unreadable 1" in caplog.text  # in the summary line


def test_uncreatable_output_folder_is_one_error_line(src: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("a file, not a folder")
    out = tmp_path / "afile" / "out"
    args = build_parser().parse_args(["label", "--src", str(src), "--out", str(out)])
    with pytest.raises(UserError, match="cannot create output folder"):
        run(args, key_source=lambda: ord("q"), show=no_screen)
    assert main(["label", "--src", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0,
                    reason="root (and Windows) can write into read-only folders")
def test_read_only_output_folder_is_an_error(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    out.mkdir()
    out.chmod(0o500)
    try:
        args = build_parser().parse_args(["label", "--src", str(src), "--out", str(out)])
        with pytest.raises(UserError, match="output folder"):
            run(args, key_source=lambda: ord("q"), show=no_screen)
    finally:
        out.chmod(0o700)


def test_missing_source_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["label", "--src", str(tmp_path / "nope"), "--out", str(tmp_path / "dataset")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: source folder not found: {tmp_path / 'nope'}"]
    assert not (tmp_path / "dataset").exists()


def test_without_a_screen_it_fails_before_opening_a_window(
        src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the DISPLAY check is for Linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    args = build_parser().parse_args(["label", "--src", str(src), "--out", str(tmp_path / "d")])
    with pytest.raises(UserError, match="no screen"):
        run(args)


def test_order_confidence_needs_a_model(src: Path, tmp_path: Path) -> None:
    args = build_parser().parse_args(["label", "--src", str(src), "--out", str(tmp_path / "d"),
                                      "--order", "confidence"])
    with pytest.raises(UserError, match="needs --model"):
        run(args, key_source=lambda: ord("q"), show=no_screen)


# -- with a model ---------------------------------------------------------------------------
def test_model_orders_most_confident_first_and_enter_accepts(model_src: Path, tmp_path: Path,
                                                             model: Path) -> None:
    out = tmp_path / "dataset"
    rc, titles = drive(["--src", str(model_src), "--out", str(out), "--model", str(model)], "\r\r\r\r")
    assert rc == 0
    assert titles[:4] == ["pale.jpg", "dark.jpg", "orig.jpg", "gray.png"]
    assert files(out / "female") == ["orig.jpg", "pale.jpg"]
    assert files(out / "male") == ["dark.jpg"]
    # Enter does nothing while the model is uncertain: gray.png is shown again, not filed
    assert titles[4:] == ["gray.png"]
    assert str(model_src / "gray.png") not in state(out)["entries"]


def test_order_uncertain_shows_the_hard_ones_first(model_src: Path, tmp_path: Path, model: Path) -> None:
    _, titles = drive(["--src", str(model_src), "--out", str(tmp_path / "d"), "--model", str(model),
                       "--order", "uncertain"], "ssss")
    assert titles == ["gray.png", "orig.jpg", "dark.jpg", "pale.jpg"]


# -- review mode ------------------------------------------------------------------------------
@pytest.fixture
def dataset(tmp_path: Path, photo: np.ndarray) -> Path:
    """dark.jpg is filed as female although the model is sure it is male."""
    root = tmp_path / "dataset"
    images = variants(photo)
    for label, names in (("female", ["dark.jpg", "pale.jpg"]), ("male", ["orig.jpg"])):
        (root / label).mkdir(parents=True)
        for name in names:
            cv2.imwrite(str(root / label / name), images[name])
    return root


def test_review_needs_a_model(dataset: Path) -> None:
    args = build_parser().parse_args(["label", "--review", str(dataset)])
    with pytest.raises(UserError, match="--review needs --model"):
        run(args, key_source=lambda: ord("q"), show=no_screen)


def test_review_moves_the_mislabelled_image_and_logs_it(dataset: Path, model: Path) -> None:
    rc, titles = drive(["--review", str(dataset), "--model", str(model)], "xs")
    assert rc == 0
    # most disputed first: dark (p_female ~0.08 in female/), orig (~0.79 in male/), pale (agrees)
    assert titles == ["dark.jpg (female)", "orig.jpg (male)", "pale.jpg (female)"]
    assert files(dataset / "female") == ["pale.jpg"]
    assert files(dataset / "male") == ["dark.jpg", "orig.jpg"]
    with (dataset / LOG_NAME).open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == LOG_COLUMNS
    assert len(rows) == 2
    row = dict(zip(rows[0], rows[1], strict=True))
    assert (row["file"], row["from"], row["to"], row["moved_to"]) == (
        "female/dark.jpg", "female", "male", "male/dark.jpg")
    assert float(row["p_female"]) < 0.2
    datetime.fromisoformat(row["time"])


def test_review_undo_moves_back_and_logs_that_too(dataset: Path, model: Path) -> None:
    _, titles = drive(["--review", str(dataset), "--model", str(model)], "\tu")
    assert titles[:3] == ["dark.jpg (female)", "orig.jpg (male)", "dark.jpg (female)"]
    assert files(dataset / "female") == ["dark.jpg", "pale.jpg"]
    with (dataset / LOG_NAME).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["from"], r["to"]) for r in rows] == [("female", "male"), ("male", "female")]


def test_review_keeps_the_label_state_pointing_at_the_image(model_src: Path, tmp_path: Path,
                                                              model: Path) -> None:
    out = tmp_path / "dataset"
    drive(["--src", str(model_src), "--out", str(out), "--model", str(model), "--order", "name"], "ff")
    assert files(out / "female") == ["dark.jpg", "gray.png"]  # dark.jpg mislabelled on purpose
    drive(["--review", str(out), "--model", str(model)], "x")
    entry = state(out)["entries"][str(model_src / "dark.jpg")]
    assert (entry["decision"], entry["dest"]) == ("male", "male/dark.jpg")
    # undoing both label decisions now removes the right files
    drive(["--src", str(model_src), "--out", str(out), "--model", str(model), "--order", "name"], "uu")
    assert files(out / "female") == files(out / "male") == []


# -- drawing --------------------------------------------------------------------------------
def test_render_fits_large_images_and_enlarges_small_ones(photo: np.ndarray) -> None:
    item = Item(Path("x.jpg"), faces=[])
    big = render(cv2.resize(photo, (4000, 3000)), item, [("1 of 1", (255, 255, 255))], "", "help")
    assert big.shape[1] <= MAX_W and big.shape[0] <= MAX_H
    small = render(cv2.resize(photo, (64, 64)), item, [], "msg", "help")
    assert max(small.shape[:2]) >= 480
