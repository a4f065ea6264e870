"""realtime.files: atomic writes, special files, overlap with inputs, write errors, cleanup."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from realtime import files
from realtime.errors import UserError
from realtime.files import Output


def test_atomic_write_replaces_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), files.open_output(target) as fh:
        fh.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary file left
    files.write_text_atomic(target, "new")
    assert target.read_text() == "new"


def test_special_files_are_written_directly_never_replaced(tmp_path: Path) -> None:
    link = tmp_path / "null_link"
    link.symlink_to("/dev/null")
    assert files.is_special("/dev/null") and files.is_special(link) and files.is_special("-")
    files.write_text_atomic(link, "x" * 1000)
    assert link.is_symlink() and os.path.realpath(link) == "/dev/null"
    assert not files.is_special(tmp_path) and not files.is_special(tmp_path / "absent")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert files.is_special(fifo)


def test_write_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    with files.open_output("-") as fh:
        fh.write('{"frame": 0}\n')
    assert capsys.readouterr().out == '{"frame": 0}\n'


def test_disk_full_is_one_clear_error_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.jsonl"
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UserError, match=r"cannot write .*out\.jsonl: the disk is full"), \
            files.open_output(target) as fh:
        fh.write("data\n")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert list(tmp_path.iterdir()) == []


def test_outputs_never_write_an_input(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    with pytest.raises(UserError, match="is the input"):
        files.check_outputs([Output("--output", clip)], [clip])
    with pytest.raises(UserError, match="is the input"):
        files.check_outputs([Output("--jsonl", tmp_path / "." / "clip.mp4")], [clip])
    for out in (photos, photos / "sub", photos / "labelled"):
        with pytest.raises(UserError, match="overlaps the input"):
            files.check_outputs([Output("--output", out, folder=True)], [photos])
    with pytest.raises(UserError, match="overlaps the input"):
        files.check_outputs([Output("--output", tmp_path, folder=True)], [photos])  # contains the input
    files.check_outputs([Output("--output", tmp_path / "labelled", folder=True),
                         Output("--jsonl", tmp_path / "o.jsonl")], [photos])
    files.check_outputs([Output("--jsonl", Path("/dev/null"))], [clip])
    assert clip.read_bytes() == b"x"


def test_check_writable_and_long_names(tmp_path: Path) -> None:
    files.check_writable(tmp_path / "a" / "b.mp4")
    with pytest.raises(UserError, match="too long"):
        files.check_writable(tmp_path / ("x" * 300 + ".mp4"))
    with pytest.raises(UserError, match="is a folder"):
        files.check_writable(Path(""))  # Path("") is "."
    assert len(files.temp_name(tmp_path / ("y" * 250 + ".mp4")).name.encode()) <= 255


def test_cleanup_removes_registered_temps(tmp_path: Path) -> None:
    tmp = files.temp_name(tmp_path / "v.mp4")
    tmp.write_bytes(b"partial")
    files.register_temp(tmp)
    files.cleanup_temps()
    assert not tmp.exists()


def test_list_images(tmp_path: Path) -> None:
    for name in ("a.JPG", "b.png", "c.txt", ".hidden.jpg", "sub/d.webp", ".partial/e.jpg"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in files.list_images(tmp_path)] == ["a.JPG", "b.png",
                                                                                         "sub/d.webp"]
