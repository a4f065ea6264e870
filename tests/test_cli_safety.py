"""No input is ever written, special outputs are streamed, write errors and signals leave nothing
incomplete at a final name, and argument errors are one line (issue 10's CLI rules)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import pytest
from realtime_helpers import REPO_ROOT, assert_one_error, leftovers, run_realtime, synthetic_frames, write_clip


def digest(path: Path) -> str:
    if path.is_dir():
        return hashlib.sha256(b"".join(digest(p).encode() for p in sorted(path.rglob("*")) if p.is_file())).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "clip.mp4", synthetic_frames(6))


def test_output_or_jsonl_equal_to_the_input_is_refused(clip: Path, tmp_path: Path) -> None:
    before = digest(clip)
    assert_one_error(run_realtime("--source", str(clip), "--output", str(clip)), "is the input")
    alias = tmp_path / "." / "clip.mp4"
    assert_one_error(run_realtime("--source", str(clip), "--jsonl", str(alias)), "is the input")
    link = tmp_path / "link.mp4"
    link.symlink_to(clip)
    assert_one_error(run_realtime("--source", str(clip), "--output", str(link)), "is the input")
    assert digest(clip) == before


def test_folder_output_inside_or_onto_the_input_is_refused(face_dataset, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(face_dataset.root / "female", photos)
    before = digest(photos)
    for out in (photos, photos / "labelled", tmp_path):
        assert_one_error(run_realtime("--source", str(photos), "--output", str(out)), "overlaps the input")
    assert digest(photos) == before


def test_jsonl_to_stdout_and_to_a_device_link(clip: Path, tmp_path: Path) -> None:
    proc = run_realtime("--source", str(clip), "--jsonl", "-", "-q")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == 6 and lines[0]["frame"] == 0
    link = tmp_path / "null.jsonl"
    link.symlink_to("/dev/null")
    proc = run_realtime("--source", str(clip), "--jsonl", str(link))
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and os.path.realpath(link) == "/dev/null"


def _tiny_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("what", ["video", "jsonl"])
def test_disk_full_is_one_error_and_nothing_at_a_final_name(tmp_path: Path, what: str) -> None:
    full = tmp_path / "full"
    if not _tiny_tmpfs(full, "64k"):
        pytest.skip("needs root and tmpfs to fill a disk")
    try:
        clip = write_clip(tmp_path / "long.mp4", synthetic_frames(60, size=(640, 480)))
        out = {"video": ["--output", str(full / "out.mp4")], "jsonl": ["--output", str(tmp_path / "ok.mp4"),
                                                                     "--jsonl", str(full / "out.jsonl")]}[what]
        if what == "jsonl":  # fill the disk first so that the JSONL cannot grow
            (full / "filler").write_bytes(b"x" * 60_000)
        proc = run_realtime("--source", str(clip), *out)
        assert_one_error(proc, "cannot write", "disk")
        assert not (full / "out.mp4").exists() and not (full / "out.jsonl").exists()
        assert not (tmp_path / "ok.mp4").exists()  # no output is published when one fails
        assert not leftovers(full) and not leftovers(tmp_path)
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_like_ctrl_c(tmp_path: Path, sig: signal.Signals) -> None:
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "realtime", "--source", "synthetic:frames=100000,size=320x240",
                             "--output", str(out), "--jsonl", str(jsonl), "--no-display", "--no-progress"],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not leftovers(tmp_path):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    frames = int(cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FRAME_COUNT))
    assert frames > 0 and frames == len(jsonl.read_text().splitlines())
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("args", [["--reconnect-wait", "-1"], ["--threads", "0"], ["--min-face-score", "1.5"],
                                  ["--output", ""], ["--camera-size", "big"], ["--max-age", "0"]])
def test_argument_errors_are_one_line_without_usage(args: list[str]) -> None:
    proc = run_realtime("--source", "synthetic:frames=2", *args)
    line = assert_one_error(proc)
    assert "usage:" not in proc.stderr and line.endswith("(see --help)")


def test_unknown_synthetic_key_and_unreadable_folder(tmp_path: Path) -> None:
    assert_one_error(run_realtime("--source", "synthetic:bogus=1"), "unknown key", "bogus")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (bad / "b.png").write_bytes(b"")
    proc = run_realtime("--source", str(bad), "--output", str(tmp_path / "out"))
    assert_one_error(proc, "none of the 2 image(s)")
    assert not (tmp_path / "out" / "contact_sheet.jpg").exists()


@pytest.mark.parametrize("cmd", [
    ["realtime.web", "--port", "0"],
    ["realtime.web", "--max-upload-mb", "-3"],
    ["training", "train", "--data", "d", "--run", "r", "--batch-size", "0"],
    ["training", "prepare", "--out", "o", "--val-fraction", "1.5"],
    ["training", "export", "--checkpoint", "c", "--data", "d", "--threads", "0"],
    ["training", "evaluate", "--model", "m", "--data", "d", "--report", "r", "--batch-size", "-1"],
])
def test_other_clis_refuse_bad_arguments_in_one_line(cmd: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", *cmd], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    line = assert_one_error(proc)
    assert "usage:" not in proc.stderr and line.endswith("(see --help)")


def test_single_image_prints_faces_or_writes_the_named_image(tmp_path: Path, face_image) -> None:
    image = tmp_path / "grace.jpg"
    cv2.imwrite(str(image), face_image)
    proc = run_realtime("--source", str(image), "-q")
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    assert line.startswith(f"{image}: face 1: ") and "p_female=" in line and "box=" in line
    out = tmp_path / "one.jpg"
    proc = run_realtime("--source", str(image), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and cv2.imread(str(out)).shape == face_image.shape


def _wait_until_loading(pid: int, deadline: float) -> bool:
    """True once the process maps numpy's native library: Python is importing the runtime's modules."""
    while time.monotonic() < deadline:
        try:
            if "numpy" in Path(f"/proc/{pid}/maps").read_text():
                return True
        except OSError:
            return False
        time.sleep(0.002)
    return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see when imports start")
def test_ctrl_c_while_the_modules_load_exits_130_quietly() -> None:
    cmd = [sys.executable, "-m", "realtime", "--source", "synthetic:frames=100000,size=320x240", "--no-display",
           "--no-progress", "--threads", "1"]
    for k in range(6):
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            if _wait_until_loading(proc.pid, time.monotonic() + 20):
                time.sleep(0.01 * k)  # at different points of the imports
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130, err[-2000:]
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]


def test_an_interrupt_inside_the_stderr_silencing_block_never_loses_stderr() -> None:
    """Ctrl-C landing anywhere in quiet_stderr()'s set-up or tear-down: the interrupted path's
    restore_stderr() brings fd 2 back every time (once in ~135 signalled runs it stayed /dev/null)."""
    code = textwrap.dedent("""
        import os, signal, time
        from realtime.native import quiet_stderr, restore_stderr
        armed, hits, original = False, 0, os.fstat(2)
        def interrupt(signum, frame):  # Ctrl-C, but only inside the block under test
            if armed:
                raise KeyboardInterrupt
        signal.signal(signal.SIGINT, interrupt)
        print("ready", flush=True)
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            try:
                armed = True
                with quiet_stderr():
                    pass
                armed = False
            except KeyboardInterrupt:
                armed = False
                hits += 1
                restore_stderr()  # what every interrupted exit path of the CLIs does
                now = os.fstat(2)
                assert (now.st_dev, now.st_ino) == (original.st_dev, original.st_ino), "fd 2 not restored"
        os.write(2, b"interrupted %d times\\nfinal\\n" % hits)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        for _ in range(300):  # ~1 s of interrupts, well inside the child's 3 s loop
            proc.send_signal(signal.SIGINT)
            time.sleep(0.003)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-2000:]
    assert err.endswith("final\n"), err[-500:]
    assert int(err.split("interrupted ")[1].split()[0]) >= 20, err  # the block really was interrupted
