"""The live window without a camera or a screen: scripted key presses drive it, a fake screen
records what it shows; one test opens a real window under Xvfb and keeps a screenshot."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures import REPO_ROOT

from realtime import live, pipeline
from realtime.face import Face
from realtime.live import KEY_SPACE, LiveWindow
from realtime.paths import GENDER_MODEL
from realtime.pipeline import Config, run

ARTIFACTS = REPO_ROOT / "test-artifacts"


class Script:
    """Key presses by call number (keys(delay) is called once per shown frame, more while paused)."""

    def __init__(self, keys: dict[int, str | int]) -> None:
        self.keys = {k: (ord(v) if isinstance(v, str) else v) for k, v in keys.items()}
        self.calls = 0

    def __call__(self, delay_ms: int) -> int:
        key = self.keys.get(self.calls, 255)
        self.calls += 1
        return key


class Screen:
    def __init__(self) -> None:
        self.shown: list[np.ndarray] = []

    def __call__(self, image: np.ndarray) -> bool:
        self.shown.append(image)
        return True


def frame(k: int) -> np.ndarray:
    image = np.zeros((240, 320, 3), np.uint8)
    image[:, :100] = (0, 0, 200)  # red band on the left of the captured frame
    image[100:140, 150 + k : 190 + k] = 255
    return image


def test_keys_snapshot_record_pause_help_quit(tmp_path: Path) -> None:
    keys = Script({2: "s", 3: "r", 7: "r", 8: "h", 9: KEY_SPACE, 10: 255, 11: KEY_SPACE, 12: "q"})
    screen = Screen()
    win = LiveWindow(mirror=True, captures=tmp_path / "caps", fps=10.0, keys=keys, screen=screen)
    views = [Face((150, 100, 40, 40), "female", {"p_female": 0.9}, 1),
             Face((20, 20, 30, 30), "male", {"p_female": 0.2}, 2)]
    results = [win.show(frame(k), views, frame(k), 25.0) for k in range(11)]
    assert results[:10] == [True] * 10 and results[10] is False  # q (pressed while paused) quits
    win.close()
    (snap,) = win.snapshots
    assert snap.suffix == ".png" and cv2.imread(str(snap)).shape == (240, 320, 3)
    (clip,) = win.recordings
    cap = cv2.VideoCapture(str(clip))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4  # frames 4..7 (r on 3, r again on 7)
    assert win.status.seen == {"female": 1, "male": 1, "uncertain": 0}
    assert not [p for p in (tmp_path / "caps").iterdir() if "partial" in p.name]
    # Mirrored view: the red band of the captured left is on the right of the window.
    assert screen.shown[0][200, 300, 2] > 150 and screen.shown[0][200, 10, 2] < 50
    # Paused after frame 9: that frame stays on screen (with a PAUSED badge) until space again.
    assert len(screen.shown) == 13
    assert np.array_equal(screen.shown[10], screen.shown[11]) and not np.array_equal(screen.shown[9],
                                                                                      screen.shown[10])


def test_quitting_while_recording_leaves_a_complete_clip(tmp_path: Path) -> None:
    win = LiveWindow(captures=tmp_path, fps=10.0, keys=Script({0: "r", 5: "q"}), screen=Screen())
    for k in range(6):
        if not win.show(frame(k), [], frame(k), None):
            break
    win.close()
    (clip,) = win.recordings
    assert int(cv2.VideoCapture(str(clip)).get(cv2.CAP_PROP_FRAME_COUNT)) == 5


def test_a_clip_that_does_not_play_is_reported_failed_not_saved(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk leaves OpenCV's writer silent and the file unplayable: the clip is checked as
    --output videos are, removed, and the window says it failed."""
    from realtime import sinks

    monkeypatch.setattr(sinks, "_frames_in", lambda path: 0)  # what reopening a truncated file finds
    win = LiveWindow(captures=tmp_path, fps=10.0, keys=Script({0: "r", 4: "r"}), screen=Screen())
    for k in range(6):
        win.show(frame(k), [], frame(k), None)
    win.close()
    assert win.recordings == []
    assert "clip failed" in win.status.toast and "holds 0 of 4 frames" in win.status.toast
    assert list(tmp_path.iterdir()) == []  # neither the broken clip nor its temporary file


@pytest.fixture
def scripted_window(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Script, Screen]]:
    keys, screen = Script({3: "s", 4: "r", 9: "r", 12: "q"}), Screen()
    monkeypatch.setattr(pipeline, "_has_display", lambda: True)
    monkeypatch.setattr(live, "_cv_keys", keys)
    monkeypatch.setattr(live, "_CvScreen", lambda: screen)
    yield keys, screen


def test_run_with_the_window_on_the_synthetic_source(scripted_window, tmp_path: Path) -> None:
    _keys, screen = scripted_window
    config = Config(source="synthetic:faces=2,frames=40,size=320x240", display=True, progress=False,
                    captures=tmp_path / "caps", blur=True, model=GENDER_MODEL)
    stats = run(config)
    assert stats.frames == 13  # q on the 13th frame
    assert len(stats.captures) == 2 and all(Path(p).is_file() for p in stats.captures)
    assert len(screen.shown) == 13


def test_xvfb_real_window_keys_and_screenshot(tmp_path: Path) -> None:
    if not (shutil.which("Xvfb") and shutil.which("xdotool") and shutil.which("import")):
        pytest.skip("needs Xvfb, xdotool and ImageMagick's import (scripts/system_deps.sh --with-chromium)")
    display = next(f":{n}" for n in range(97, 140) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                   and not Path(f"/tmp/.X{n}-lock").exists())
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        env = {**os.environ, "DISPLAY": display}
        caps = tmp_path / "caps"
        proc = subprocess.Popen([sys.executable, "-m", "realtime", "--source",
                                 "synthetic:faces=2,frames=100000,size=640x480,fps=15", "--snapshots", str(caps),
                                 "--mirror", "--no-progress"], cwd=REPO_ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        window = ""
        for _ in range(60):
            time.sleep(0.5)
            found = subprocess.run(["xdotool", "search", "--name", "Face gender"], env=env, capture_output=True,
                                   text=True)
            if found.stdout.strip():
                window = found.stdout.split()[0]
                break
        assert window, "the window did not open"
        time.sleep(1.5)

        def key(name: str) -> None:
            # No window manager on Xvfb: give the window the input focus, then type (XTEST).
            subprocess.run(["xdotool", "windowfocus", "--sync", window], env=env, check=False, capture_output=True,
                           timeout=10)
            subprocess.run(["xdotool", "key", name], env=env, check=False, capture_output=True, timeout=10)
            time.sleep(0.8)

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "live_window.png"

        def screenshot() -> np.ndarray | None:
            subprocess.run(["import", "-window", "root", str(shot)], env=env, check=True, timeout=30)
            return cv2.imread(str(shot))

        def painted() -> np.ndarray | None:
            """The screen once the window has painted it (slow on a busy machine: up to 30 s)."""
            deadline = time.monotonic() + 30
            while True:
                image = screenshot()
                if (image is not None and image.std() > 5) or time.monotonic() > deadline:
                    return image
                time.sleep(0.5)

        painted()
        key("h")
        key("s")
        time.sleep(1.0)
        image = painted()  # after the help toggles, the window repaints: on a loaded machine, not at once
        key("q")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        assert len(list(caps.glob("snapshot_*.png"))) == 1
        assert image is not None and image.std() > 5  # not a blank screen
    finally:
        if "proc" in locals() and proc.poll() is None:
            proc.kill()
        xvfb.terminate()
        xvfb.wait(timeout=10)


def test_privacy_jsonl_has_no_boxes_and_blurred_outputs(tmp_path: Path) -> None:
    import json

    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    plain = run(Config(source="synthetic:faces=1,frames=5,size=320x240", display=False, progress=False,
                       output=tmp_path / "plain.mp4"))
    stats = run(Config(source="synthetic:faces=1,frames=5,size=320x240", display=False, progress=False,
                       output=out, jsonl=jsonl, privacy=True, blur=True))
    assert stats.frames == plain.frames == 5
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    faces = [f for r in records for f in r["faces"]]
    assert faces and all(set(f) == {"track_id", "label", "p_female", "apparent_age", "reason"} for f in faces)
    a, b = cv2.VideoCapture(str(tmp_path / "plain.mp4")), cv2.VideoCapture(str(out))
    ok1, f1 = a.read()
    ok2, f2 = b.read()
    assert ok1 and ok2 and not np.array_equal(f1, f2)  # the written video is blurred
