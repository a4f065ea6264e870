"""``python -m realtime.batch`` under signals, odd inputs, untrustworthy state and damaged videos.

Every batch here runs with at most 2 workers, on tiny clips made by the test, under a timeout;
the signal tests start real processes in their own session and check, after the driver exits,
that no process of that session is left (/proc), that nothing partial is at a final name and that
no face data is in the temporary folder (TMPDIR points into the test's folder).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from realtime_helpers import REPO_ROOT, assert_one_error, leftovers, read_jsonl, synthetic_frames, write_clip

from realtime import batch
from realtime.batch.inputs import output_folders

HAS_RAY = importlib.util.find_spec("ray") is not None
PROC = Path("/proc")
needs_proc = pytest.mark.skipif(not (PROC / "self" / "stat").exists(), reason="needs Linux /proc")


def tmpdir_of(tmp: Path) -> Path:
    """The temporary folder the batch gets (TMPDIR)."""
    tmpdir = tmp / "tmpdir"
    tmpdir.mkdir(exist_ok=True)
    return tmpdir


def env_for(tmp: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmpdir_of(tmp)), "PYTHONPATH": str(REPO_ROOT)}


def run_batch(tmp: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "realtime.batch", *args, "--no-progress"]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False,
                          env=env_for(tmp))


def session_members(sid: int) -> list[int]:
    """Processes whose session is ``sid`` (the driver's own, started with start_new_session)."""
    out = []
    for entry in PROC.glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def wait_gone(sid: int, timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    left = session_members(sid)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = session_members(sid)
    return left


def kill_session(sid: int) -> None:
    """Test clean-up only: the processes this test started (its session), never others."""
    for pid in session_members(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def face_data_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and (".partial" in p.name or p.suffix in (".jsonl", ".mp4"))]


@pytest.fixture(scope="module")
def long_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four clips long enough (120 frames) to be interrupted in the middle on a busy machine."""
    src = tmp_path_factory.mktemp("long")
    frames = synthetic_frames(120, (320, 240))
    for i in range(4):
        write_clip(src / f"long{i}.mp4", frames, fps=12.0)
    return src


def interrupt_batch(tmp: Path, src: Path, how: str, *extra: str, wait_for: str = "*.partial-*",
                    timeout: float = 180) -> tuple[int, str, Path]:
    """Start the batch in its own session, send ``how`` once a worker writes, return (status,
    stderr, output) after checking that every process of the session is gone."""
    out = tmp / "out"
    cmd = [sys.executable, "-m", "realtime.batch", "--input", str(src), "--output", str(out), "--workers", "2",
           "--no-progress", *extra]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env_for(tmp))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None and not list(out.rglob(wait_for)):
            time.sleep(0.05)
        assert proc.poll() is None, f"the batch ended before it could be interrupted: {proc.communicate()[1]}"
        sig = {"SIGTERM": signal.SIGTERM, "SIGHUP": signal.SIGHUP, "SIGINT": signal.SIGINT}[how.split("-")[0]]
        if how.endswith("-group"):
            os.killpg(proc.pid, sig)  # a closed terminal, systemd, `kill -- -PGID`
        else:
            os.kill(proc.pid, sig)  # `kill PID`: the driver only
        _, stderr = proc.communicate(timeout=timeout)
        left = wait_gone(proc.pid)
        assert not left, f"processes left behind: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_session(proc.pid)
    return proc.returncode, stderr, out


def check_interrupted_output(out: Path, tmp: Path, stderr: str, signame: str, frames: int) -> None:
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("info:")]
    assert len(lines) == 1, stderr  # one line, no traceback, no Ray dump (info: lines came before)
    assert lines[0].startswith(f"error: interrupted ({signame})"), lines[0]
    assert not leftovers(out)
    assert not (out / "summary.json").exists() and not (out / "report.html").exists()
    for folder in (p for p in out.iterdir() if p.is_dir()):
        summary = folder / "summary.json"
        if summary.exists():  # whatever is at a final name is complete
            assert json.loads(summary.read_text())["frames"] == frames == len(read_jsonl(folder / "faces.jsonl"))
        else:
            assert not [p.name for p in folder.iterdir()], folder  # nothing of an unfinished video
    assert not face_data_in(tmpdir_of(tmp)), face_data_in(tmpdir_of(tmp))


@needs_proc
@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGHUP-group"])
def test_signal_stops_workers_and_leaves_resumable_outputs(long_clips: Path, tmp_path: Path, how: str) -> None:
    status, stderr, out = interrupt_batch(tmp_path, long_clips, how)
    assert status == 130, stderr
    check_interrupted_output(out, tmp_path, stderr, how.split("-")[0], 120)
    proc = run_batch(tmp_path, "--input", str(long_clips), "--output", str(out), "--workers", "2", "--resume",
                     "--no-report", "--no-video", "--max-frames", "120")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "summary.json").read_text())["totals"]["ok"] == 4


@needs_proc
@pytest.mark.slow
def test_workers_stop_when_the_driver_is_killed(long_clips: Path, tmp_path: Path) -> None:
    """SIGKILL cannot be handled: the workers notice that their driver is gone and stop (with
    the resource tracker) instead of annotating on for nobody."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "realtime.batch", "--input", str(long_clips), "--output", str(out), "--workers",
           "2", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env_for(tmp_path))
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None and not list(out.rglob("*.partial-*")):
            time.sleep(0.05)
        assert proc.poll() is None
        proc.kill()
        proc.wait()
        assert not wait_gone(proc.pid, 30), "workers outlived their driver"
        assert not leftovers(out)  # each stopped its video cleanly
    finally:
        kill_session(proc.pid)


@needs_proc
@pytest.mark.slow
@pytest.mark.skipif(not HAS_RAY, reason="needs Ray (pip install -r requirements-batch.txt)")
def test_ray_local_sigterm_to_the_group(long_clips: Path, tmp_path: Path) -> None:
    """The one Ray test here (Ray starts slowly): SIGTERM to the whole process group while Ray
    tasks write videos: exit 130, one line, Ray's processes gone, nothing partial anywhere."""
    short = Path(tempfile.mkdtemp(prefix="fgb-", dir="/tmp"))  # Ray's socket paths must stay short
    try:
        tmp = short
        status, stderr, out = interrupt_batch(tmp, long_clips, "SIGTERM-group", "--ray", "local", timeout=240)
        assert status == 130, stderr
        check_interrupted_output(out, tmp, stderr, "SIGTERM", 120)
    finally:
        shutil.rmtree(short, ignore_errors=True)


# --- inputs --------------------------------------------------------------------------------------
NEAR_NAMES = ["a.mp4", "a.avi", "a_mp4.mov", "a_mp4_mov.mkv", "a_mp4_2.mp4", "A.mp4", "a.MP4", "a.mp4.mp4",
              "a_avi.mp4", "b.mp4", "b_mp4.mp4", "summary.json.mp4", "summary.mp4", "report_files.mp4",
              "report.html.avi", "report_files/x.mp4", "report_files_/x.mp4", "x.mp4", "x/annotated.mp4.mp4",
              "x/faces.jsonl.avi", "x/summary.json.mkv", "x/summary.json/y.mp4", "x/thumbnail.jpg.mp4",
              "x/a.mp4", "x/a.avi", "x/a_mp4.mov", "cam1.mp4", "cam1/a.mp4", "Cam1/a.mp4", "cam1/a_mp4.mp4"]


def test_output_folders_are_injective_with_many_near_names() -> None:
    folders = output_folders(NEAR_NAMES)
    assert len({f.casefold() for f in folders}) == len(NEAR_NAMES), folders  # also where case is ignored
    files = {n.casefold() for n in (batch.VIDEO_NAME, batch.JSONL_NAME, batch.SUMMARY_NAME, batch.THUMB_NAME)}
    for folder in folders:
        parts = folder.casefold().split("/")
        assert parts[0] not in {n.casefold() for n in batch.RESERVED}, folder
        assert not files & set(parts), folder  # never a folder where a video's file goes
    assert dict(zip(NEAR_NAMES, folders))["b.mp4"] == "b" and dict(zip(NEAR_NAMES, folders))["x.mp4"] == "x"
    assert output_folders(NEAR_NAMES[::-1]) == folders[::-1]  # the same inputs, the same folders
    for k in range(2, 40):  # and for every prefix of a longer generated list
        names = [f"v{'.mp4' * (i % 3)}{'_mp4' * (i // 3)}.mp4" for i in range(k)]
        names = list(dict.fromkeys(names))
        assert len({f.casefold() for f in output_folders(names)}) == len(names)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    write_clip(root / "clip.mp4", synthetic_frames(6, (160, 120)), fps=12.0)
    return root / "clip.mp4"


@pytest.mark.slow
def test_near_names_keep_every_video(tiny: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.mp4", "a.avi", "a_mp4.mov"):
        (src / name).write_bytes(tiny.read_bytes())
    proc = run_batch(tmp_path, "--input", str(src), "--output", str(tmp_path / "o"), "--workers", "2",
                     "--no-video", "--no-report", "--max-frames", "2")
    assert proc.returncode == 0, proc.stderr
    videos = json.loads((tmp_path / "o" / "summary.json").read_text())["videos"]
    assert len({v["folder"] for v in videos}) == 3
    for v in videos:
        assert json.loads((tmp_path / "o" / v["folder"] / "summary.json").read_text())["source"] == v["video"]


@pytest.mark.slow
def test_links_outside_and_aliases_inside(tiny: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "real.mp4").write_bytes(tiny.read_bytes())
    (src / "alias.mp4").symlink_to(src / "real.mp4")  # the same video twice
    (src / "outside.mp4").symlink_to(tiny)  # a file outside the input folder
    proc = run_batch(tmp_path, "--input", str(src), "--output", str(tmp_path / "o"), "--workers", "2",
                     "--no-video", "--no-report", "--max-frames", "2")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "alias.mp4 is the same file as real.mp4" in warnings[0], proc.stderr
    videos = json.loads((tmp_path / "o" / "summary.json").read_text())["videos"]
    assert sorted(v["video"] for v in videos) == ["outside.mp4", "real.mp4"]


def test_output_follows_the_rule_of_every_command(tiny: Path, tmp_path: Path) -> None:
    """OUTPUT may not be, hold or lie inside what the batch reads (realtime.files.check_outputs, the
    rule of face-gender too): the input folder, the folder a ** glob searches, a video, the list
    file. Beside the videos of a folder that the batch does not search, it may."""
    from realtime.batch import collect_inputs
    from realtime.errors import UserError

    src = tmp_path / "in"
    (src / "cam").mkdir(parents=True)
    for name in ("a.mp4", "cam/b.mp4"):
        (src / name).write_bytes(tiny.read_bytes())
    listing = src / "list.txt"
    listing.write_text("a.mp4\ncam/b.mp4\n")
    elsewhere = tmp_path / "o2" / "list.txt"  # a list file inside OUTPUT, its videos outside it
    elsewhere.parent.mkdir()
    elsewhere.write_text(f"{src / 'a.mp4'}\n")
    refused = [(src, src), (src, src / "cam" / "out"), (src / "cam", src), (src / "**" / "*.mp4", src / "cam" / "o"),
               (listing, src), (src / "a.mp4", src), (src / "*.mp4", src), (elsewhere, elsewhere.parent)]
    for spec, output in refused:
        with pytest.raises(UserError, match="overlaps the input"):
            collect_inputs(str(spec), output)
    for spec, output in [(src / "*.mp4", src / "out"), (src / "a.mp4", src / "out"), (listing, tmp_path / "o"),
                         (src / "cam" / "*.mp4", src / "out")]:
        assert collect_inputs(str(spec), output), (spec, output)


def test_empty_input_and_output_are_refused(tmp_path: Path) -> None:
    for args in (("--input", "", "--output", str(tmp_path / "o")), ("--input", str(tmp_path), "--output", "")):
        proc = run_batch(tmp_path, *args, timeout=60)
        assert_one_error(proc, "must not be empty")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("case", ["detector", "metadata", "not-a-model"])
def test_bad_model_or_detector_is_refused_before_any_video(tiny: Path, tmp_path: Path, case: str) -> None:
    from realtime.paths import GENDER_MODEL

    args = ["--input", str(tiny.parent), "--output", str(tmp_path / "o"), "--workers", "1"]
    if case == "detector":
        args += ["--detector", "banana"]
        needles = ("--detector banana", "banana")
    else:
        model = tmp_path / "m" / "model.tflite"
        model.parent.mkdir()
        if case == "metadata":
            model.write_bytes(GENDER_MODEL.read_bytes())  # (a link would be resolved to the real model)
            meta = json.loads(GENDER_MODEL.with_suffix(".json").read_text())
            meta["input_size"] = "banana"
            model.with_suffix(".json").write_text(json.dumps(meta))
        else:
            model.write_bytes(b"not a model" * 100)
            model.with_suffix(".json").write_text(GENDER_MODEL.with_suffix(".json").read_text())
        args += ["--model", str(model)]
        needles = (str(model.parent),)
    t0 = time.monotonic()
    assert_one_error(run_batch(tmp_path, *args, timeout=120), *needles)
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "o").exists()  # before any video: nothing written


# --- --resume trusts nothing it reads ------------------------------------------------------------
@pytest.fixture
def done_batch(tiny: Path, tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (src / name).write_bytes(tiny.read_bytes())
    out = tmp_path / "o"
    proc = run_batch(tmp_path, "--input", str(src), "--output", str(out), "--workers", "2", "--no-video",
                     "--no-report", "--max-frames", "3")
    assert proc.returncode == 0, proc.stderr
    return src, out


EDITS = {
    "frames-string": lambda s: {**s, "frames": "3"},
    "counts-list": lambda s: {**s, "distinct_tracks": {k: [1] for k in s["distinct_tracks"]}},
    "counts-string": lambda s: {**s, "distinct_tracks": {k: "1" for k in s["distinct_tracks"]}},
    "tracks-number": lambda s: {**s, "tracks": 7},
    "track-records-numbers": lambda s: {**s, "tracks": [1, 2]},
    "dwell-list": lambda s: {**s, "dwell_s": [1, 2]},
    "timeline-strings": lambda s: {**s, "timeline": ["x"]},
    "other-video": lambda s: {**s, "source": "b.mp4"},
    "not-an-object": lambda s: [s],
}


@pytest.mark.slow
def test_resume_redoes_videos_whose_state_does_not_validate(done_batch: tuple[Path, Path], tmp_path: Path) -> None:
    src, out = done_batch
    summary = out / "a" / "summary.json"
    original = json.loads(summary.read_text())
    for name, edit in EDITS.items():
        summary.write_text(json.dumps(edit(original)))
        assert batch.completed_entry(batch.VideoInput(src / "a.mp4", "a.mp4", "a"), out, False) is None, name
    video_a = batch.VideoInput(src / "a.mp4", "a.mp4", "a")
    summary.write_text(json.dumps(original, indent=1) + "\n")
    assert batch.completed_entry(video_a, out, False) is not None  # the untouched state validates
    summary.unlink()
    os.mkfifo(summary)  # a FIFO is never opened as state (it would block): bounded by an alarm here
    signal.alarm(20)
    try:
        assert batch.completed_entry(video_a, out, False) is None
    finally:
        signal.alarm(0)
    summary.unlink()
    summary.write_text(json.dumps(EDITS["tracks-number"](original)))
    (out / "b" / "faces.jsonl").unlink()
    os.mkfifo(out / "b" / "faces.jsonl")  # opened for reading, a FIFO would block forever
    proc = run_batch(tmp_path, "--input", str(src), "--output", str(out), "--workers", "2", "--no-video",
                     "--no-report", "--max-frames", "3", "--resume", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warnings = sorted(line for line in proc.stderr.splitlines() if line.startswith("warning:"))
    assert len(warnings) == 2, proc.stderr
    assert "a.mp4" in warnings[0] and "tracks" in warnings[0]
    assert "b.mp4" in warnings[1] and "not a regular file" in warnings[1]
    assert json.loads(summary.read_text()) == original  # redone, the same
    assert (out / "b" / "faces.jsonl").is_file() and len(read_jsonl(out / "b" / "faces.jsonl")) == 3
    agg = json.loads((out / "summary.json").read_text())
    assert agg["totals"]["ok"] == 2 and agg["totals"]["resumed"] == 0


# --- noise: one warning per damaged file -----------------------------------------------------------
@pytest.mark.slow
def test_damaged_videos_give_one_warning_each_and_ffmpeg_only_with_verbose(tmp_path: Path) -> None:
    import random

    src = tmp_path / "in"
    src.mkdir()
    data = write_clip(tmp_path / "good.avi", synthetic_frames(20, (160, 120)), fps=12.0, fourcc="XVID").read_bytes()
    rnd = random.Random(3)
    for i in range(3):
        damaged = bytearray(data)
        for _ in range(60):
            damaged[rnd.randrange(400, len(damaged))] = rnd.randrange(256)
        (src / f"flip{i}.avi").write_bytes(bytes(damaged[: len(damaged) * 3 // 4]))
    (src / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    args = ("--input", str(src), "--workers", "2", "--no-video", "--no-report")
    quiet = run_batch(tmp_path, *args, "--output", str(tmp_path / "o1"))
    assert quiet.returncode == 3, quiet.stderr
    lines = quiet.stderr.splitlines()
    assert all(line.startswith(("warning:", "info:")) for line in lines), quiet.stderr
    assert len([line for line in lines if line.startswith("warning:")]) == 4  # one per file
    loud = run_batch(tmp_path, *args, "--output", str(tmp_path / "o2"), "-v")
    assert loud.returncode == 3
    assert "moov atom not found" in loud.stderr  # FFmpeg's own lines, with -v


def test_worker_stderr_filter_drops_every_native_line() -> None:
    """What a batch worker installs (unless -v): native lines of any kind are dropped, Python's
    own log lines pass."""
    code = ("import logging, os, sys\n"
            "from realtime.cli import setup_logging\n"
            "from realtime.native import filter_native_stderr, unfilter_native_stderr\n"
            "setup_logging()\n"
            "assert filter_native_stderr(drop_all=True)\n"
            "os.write(2, b'[h264 @ 0x55d1] error while decoding MB 1 2\\n    Last message repeated 3 times\\n')\n"
            "os.write(2, b'some native line nobody has seen before\\n')\n"
            "logging.getLogger('x').warning('kept')\n"
            "unfilter_native_stderr()\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["warning: kept"], proc.stderr
