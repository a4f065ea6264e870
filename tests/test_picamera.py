"""``--source picam``: a clear message without picamera2, and main/low-res streams with it;
plus the checks of the Pi setup scripts that can run off a Pi (syntax, shellcheck, --dry-run).

No Pi or camera is needed: picamera2 is either blocked (``sys.modules['picamera2'] = None`` makes
``import picamera2`` fail) or replaced by a small fake that hands out arrays like picamera2 does.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from realtime.errors import SourceError
from realtime.face_detector import Detection
from realtime.pipeline import FacePipeline
from realtime.sources import PICAMERA2_HELP, PicameraSource, open_source

REPO_ROOT = Path(__file__).resolve().parent.parent
# `python -m realtime` with picamera2 blocked, so the test means the same on a Pi that has it.
CLI_WITHOUT_PICAMERA2 = ("import sys; sys.modules['picamera2'] = None; "
                         "from realtime.__main__ import main; sys.exit(main(sys.argv[1:]))")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_open_source_without_picamera2_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)
    source = open_source("picam")
    assert isinstance(source, PicameraSource) and source.live
    with pytest.raises(SourceError) as info, source:
        pytest.fail("the source must not open without picamera2")
    assert str(info.value) == PICAMERA2_HELP
    assert "python3-picamera2" in PICAMERA2_HELP and "--system-site-packages" in PICAMERA2_HELP


def _assert_picamera2_error(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    (line,) = error_lines(done.stderr)
    assert "picamera2" in line and "python3-picamera2" in line


def test_cli_without_picamera2_exits_2_with_one_error_line() -> None:
    done = subprocess.run([sys.executable, "-c", CLI_WITHOUT_PICAMERA2, "--source", "picam", "--no-display"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    _assert_picamera2_error(done)


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="picamera2 is installed here")
def test_plain_cli_without_picamera2() -> None:
    done = subprocess.run([sys.executable, "-m", "realtime", "--source", "picam", "--no-display"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    _assert_picamera2_error(done)


class FakePicamera2:
    """Just enough of picamera2.Picamera2: a video configuration with ``main`` and ``lores``."""

    instances: ClassVar[list[FakePicamera2]] = []

    def __init__(self) -> None:
        self.config: dict | None = None
        self.started = self.closed = False
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main: dict, lores: dict) -> dict:
        return {"main": main, "lores": lores}

    def configure(self, config: dict) -> None:
        self.config = config

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True

    def capture_array(self, stream: str) -> np.ndarray:
        assert self.config is not None and self.started
        w, h = self.config[stream]["size"]
        if stream == "main":  # RGB888 is B, G, R in memory: what OpenCV calls BGR
            image = np.zeros((h, w, 3), np.uint8)
            image[..., 0] = 200
            return image
        return np.full((h * 3 // 2, w), 128, np.uint8)  # YUV420 planar: Y plane, then U and V


@pytest.fixture
def fake_picamera2(monkeypatch: pytest.MonkeyPatch) -> type[FakePicamera2]:
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    FakePicamera2.instances.clear()
    return FakePicamera2


def test_picam_gives_the_main_stream_to_show_and_the_lores_stream_to_detect(
        fake_picamera2: type[FakePicamera2]) -> None:
    source = PicameraSource(main_size=(1280, 720), lores_size=(640, 360))
    with source:
        cam = fake_picamera2.instances[0]
        assert cam.started
        assert cam.config["main"] == {"size": (1280, 720), "format": "RGB888"}
        assert cam.config["lores"] == {"size": (640, 360), "format": "YUV420"}
        frames = source.frames()
        first, second = next(frames), next(frames)
    assert cam.closed
    assert (first.index, second.index) == (0, 1) and second.time_s >= first.time_s
    assert first.image.shape == (720, 1280, 3) and first.image[0, 0, 0] == 200
    assert first.detect_image is not None and first.detect_image.shape == (360, 640, 3)


def test_boxes_found_on_the_lores_stream_are_scaled_to_the_main_stream(
        fake_picamera2: type[FakePicamera2]) -> None:
    seen: list[tuple[int, ...]] = []

    class Detector:
        def detect(self, image: np.ndarray, timestamp_ms: int | None = None) -> list[Detection]:
            seen.append(image.shape)
            return [Detection((100, 50, 40, 40), 0.9)]

        def close(self) -> None:
            pass

    with PicameraSource(main_size=(1280, 720), lores_size=(640, 360)) as source:
        frame = next(source.frames())
    pipeline = FacePipeline(Detector(), classifier=None)  # type: ignore[arg-type]
    (det,) = pipeline.detect(frame)
    assert seen == [(360, 640, 3)]  # detection ran on the small stream
    assert det.box == (200, 100, 80, 80)  # ... and the box is in main-stream pixels


# --- scripts/setup_pi.sh and scripts/check_aarch64.sh: what can be checked off a Pi ---------------
SCRIPTS = [REPO_ROOT / "scripts" / "setup_pi.sh", REPO_ROOT / "scripts" / "check_aarch64.sh"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_pi_scripts_parse_and_pass_shellcheck(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt install shellcheck)")
    done = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout


def test_setup_pi_dry_run_changes_nothing_and_shows_every_step(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    done = subprocess.run(["bash", str(SCRIPTS[0]), "--dry-run", "--venv", str(venv)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    for needle in ("0/4", "1/4", "2/4", "3/4", "4/4", "--system-site-packages", "-r requirements.txt",
                   "--only-binary=:all:", "-m realtime --source assets/face-demographics-walking-and-pause.mp4",
                   "--no-display", "nothing was changed"):
        assert needle in done.stdout, needle
    assert not venv.exists()


def test_setup_pi_installs_mediapipe_only_when_asked(tmp_path: Path) -> None:
    """The lean runtime by default; --with-mediapipe installs the extra's file (which includes it)."""
    def pip_lines(*args: str) -> list[str]:
        done = subprocess.run(["bash", str(SCRIPTS[0]), "--dry-run", "--venv", str(tmp_path / "v"), *args],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return [line for line in done.stdout.splitlines() if "--only-binary=:all:" in line]

    assert ["-r requirements.txt" in line and "mediapipe" not in line for line in pip_lines()] == [True]
    assert ["-r requirements-mediapipe.txt" in line for line in pip_lines("--with-mediapipe")] == [True]


def test_setup_pi_refuses_other_machines_without_force() -> None:
    if sys.platform.startswith("linux") and os.uname().machine == "aarch64":
        pytest.skip("this is an aarch64 Linux machine")
    done = subprocess.run(["bash", str(SCRIPTS[0]), "--skip-apt"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "aarch64" in done.stderr and "--force" in done.stderr


def test_pi_extras_are_pinned() -> None:
    done = subprocess.run(["bash", str(SCRIPTS[0]), "--print-pip-extras"], capture_output=True, text=True,
                          check=True)
    extras = done.stdout.split()
    assert extras and all("==" in spec for spec in extras)
