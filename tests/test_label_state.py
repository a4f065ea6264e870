"""``python -m training label``: its state file is untrusted input, its writes fail cleanly, and its
images have the pixel limit. Also ``training evaluate --report`` refusing an unwritable report
before the evaluation starts. Headless: scripted keys and a display that records."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures import png_bomb

from realtime.errors import UserError
from training.__main__ import build_parser, main
from training.label import LOG_NAME, STATE_NAME, Item, ReviewSession, load_state, run


# -- data -------------------------------------------------------------------------------------------
@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "unsorted"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.png"):
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (60, 80, 3), np.uint8))
    return folder


def drive(argv: list[str], keys: str) -> tuple[int, list[str]]:
    args = build_parser().parse_args(["label", *argv])
    script = iter(keys)
    titles: list[str] = []
    return run(args, key_source=lambda: ord(next(script, "q")),
               show=lambda image, title: titles.append(title)), titles


def write_state(out: Path, entries: object, version: object = 1) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / STATE_NAME
    path.write_text(json.dumps({"version": version, "updated": "2024-01-01T00:00:00+00:00", "entries": entries}))
    return path


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


# -- the state file is checked when it is read -------------------------------------------------------
GOOD = {"decision": "female", "dest": "female/a.jpg", "time": "2024-01-01T00:00:00+00:00"}


@pytest.mark.parametrize(("entry", "words"), [
    ("female", "entry '{key}': not an object"),
    ({"decision": "cat", "dest": None}, "decision 'cat' is not female, male or skip"),
    ({**GOOD, "dest": "female/../../victim.txt"}, "dest 'female/../../victim.txt' points outside its class folder"),
    ({**GOOD, "dest": "/etc/passwd"}, "dest '/etc/passwd' is not a relative path"),
    ({**GOOD, "dest": "female\\..\\..\\x.jpg"}, "is not a relative path"),
    ({**GOOD, "dest": "male/a.jpg"}, "dest 'male/a.jpg' is not in the female/ folder"),
    ({**GOOD, "dest": "female"}, "points outside its class folder"),
    ({**GOOD, "dest": 42}, "dest is not a path"),
    ({"decision": "skip", "dest": "female/a.jpg"}, "a skipped image with a copy"),
    ({**GOOD, "copied": "yes"}, "copied is not true or false"),
    ({**GOOD, "time": 5}, "time is not text"),
    ({**GOOD, "owner": "me"}, "unknown field 'owner'"),
])
def test_a_malformed_entry_is_one_error_line_naming_the_file(src: Path, tmp_path: Path, entry: object, words: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dataset"
    key = str(src / "a.jpg")
    path = write_state(out, {key: entry})
    assert main(["label", "--src", str(src), "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: state file {path} is damaged (entry ")
    assert words.format(key=key) in line
    assert line.endswith("; move it away to start over")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"version": 2, "entries": {}}',
                                     '{"version": 1, "entries": []}', '{"version": 1}',
                                     "[" * 100_000 + "]" * 100_000, '{"version": 1, "entries": {"a\\nb": 7}}'])
def test_a_damaged_file_is_one_error_line(src: Path, tmp_path: Path, content: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dataset"
    out.mkdir()
    (out / STATE_NAME).write_text(content)
    assert main(["label", "--src", str(src), "--out", str(out)]) == 2
    assert f"state file {out / STATE_NAME} is damaged" in one_error_line(capsys)


def test_a_crafted_entry_cannot_make_undo_delete_outside_the_dataset(src: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "dataset"
    write_state(out, {str(src / "a.jpg"): {**GOOD, "dest": "female/../../victim.txt"}})
    with pytest.raises(UserError, match="points outside its class folder"):
        drive(["--src", str(src), "--out", str(out)], "u")
    assert victim.read_text() == "precious"


def test_undo_does_not_follow_a_class_folder_that_links_elsewhere(src: Path, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "victim.jpg").write_text("precious")
    out = tmp_path / "dataset"
    out.mkdir()
    (out / "female").symlink_to(elsewhere, target_is_directory=True)
    write_state(out, {str(src / "a.jpg"): {**GOOD, "dest": "female/victim.jpg"}})
    with caplog.at_level(logging.WARNING, logger="training.label"):
        rc, titles = drive(["--src", str(src), "--out", str(out)], "u")
    assert rc == 0 and titles[-1] == "a.jpg"  # the decision was undone: the image is shown again
    assert (elsewhere / "victim.jpg").read_text() == "precious"
    assert "undo: not deleting female/victim.jpg: it is not inside" in caplog.text
    assert load_state(out / STATE_NAME) == {}


def test_undo_of_a_well_formed_entry_still_deletes_its_copy(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    drive(["--src", str(src), "--out", str(out)], "f")
    assert (out / "female" / "a.jpg").is_file()
    assert load_state(out / STATE_NAME)[str(src / "a.jpg")]["dest"] == "female/a.jpg"
    drive(["--src", str(src), "--out", str(out)], "u")
    assert not (out / "female" / "a.jpg").exists()


# -- writes fail cleanly ----------------------------------------------------------------------------
def test_state_write_error_is_one_error_and_leaves_no_half_written_file(src: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "dataset"
    drive(["--src", str(src), "--out", str(out)], "f")  # one good decision first
    before = (out / STATE_NAME).read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("training.label.os.fsync", disk_full)
    with pytest.raises(UserError) as info:
        drive(["--src", str(src), "--out", str(out)], "m")
    assert str(info.value) == f"cannot write {out / STATE_NAME}: No space left on device"
    assert (out / STATE_NAME).read_bytes() == before  # the old state, whole
    assert not list(out.rglob("*.tmp"))
    assert sorted(p.name for p in (out / "male").iterdir()) == []  # the copy went with the failed decision
    monkeypatch.undo()
    rc, titles = drive(["--src", str(src), "--out", str(out)], "m")  # and the next run carries on
    assert rc == 0 and titles[0] == "b.png"


def test_relabel_log_write_error_moves_the_image_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "dataset"
    (root / "female").mkdir(parents=True)
    (root / "male").mkdir()
    image = root / "female" / "x.jpg"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    (root / LOG_NAME).write_text("time,file,from,to,p_female,moved_to\n")
    session = ReviewSession(root, [Item(image, "female")])

    def read_only(fd: int) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("training.label.os.fsync", read_only)
    with pytest.raises(UserError, match=f"cannot write {root / LOG_NAME}: Read-only file system"):
        session.move()
    assert image.is_file() and not (root / "male" / "x.jpg").exists()
    assert (root / LOG_NAME).read_text() == "time,file,from,to,p_female,moved_to\n"  # no half row
    assert session.current is not None and session.current.path == image


def test_review_with_a_damaged_state_stops_before_moving_anything(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "dataset"
    for label in ("female", "male"):
        (root / label).mkdir(parents=True)
        cv2.imwrite(str(root / label / "x.jpg"), np.zeros((8, 8, 3), np.uint8))
    write_state(root, {"/somewhere/a.jpg": {"decision": "female", "dest": "../../etc/passwd"}})
    assert main(["label", "--review", str(root), "--model", str(tmp_path / "none.tflite")]) == 2
    assert "is damaged" in one_error_line(capsys)


# -- the pixel limit ----------------------------------------------------------------------------------
def test_images_over_the_pixel_limit_are_skipped_with_the_reason(src: Path, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    (src / "bomb.png").write_bytes(png_bomb(9000, 6000))  # 54 Mpx: 162 MB decoded, never decoded here
    (src / "radiance.jpg").write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 20000 +X 20000\n" + bytes(64))
    out = tmp_path / "dataset"
    with caplog.at_level(logging.INFO, logger="training.label"):
        rc, titles = drive(["--src", str(src), "--out", str(out)], "ff")
    assert rc == 0 and titles == ["a.jpg", "b.png"]
    assert f"unreadable image skipped: {src / 'bomb.png'} (it is 9000 x 6000 pixels; images are limited to " \
           "50 megapixels)" in caplog.text
    assert f"unreadable image skipped: {src / 'radiance.jpg'} (unreadable or not an image)" in caplog.text
    assert "unreadable 2" in caplog.text


# -- training evaluate --report ------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["file-as-folder", "folder", "proc"])
def test_evaluate_checks_the_report_path_before_evaluating(tmp_path: Path, where: str,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    def never(*_: object, **__: object) -> None:
        raise AssertionError("the evaluation started")

    monkeypatch.setattr("training.evaluate.evaluate", never)
    (tmp_path / "afile").write_text("not a folder")
    report = {"file-as-folder": tmp_path / "afile" / "report.json", "folder": tmp_path,
              "proc": Path("/proc/self/report.json")}[where]
    rc = main(["evaluate", "--model", str(tmp_path / "m.tflite"), "--data", str(tmp_path), "--report", str(report)])
    assert rc == 2
    line = one_error_line(capsys)
    assert str(report) in line
