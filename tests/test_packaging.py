"""The project installs as a package: pins agree with the requirements files, no combination of
extras can hold two OpenCV wheels, the wheel carries the models, and the console commands work from
any folder."""

from __future__ import annotations

import importlib.metadata
import itertools
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from fixtures import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
EXTRA_FILES = {"mediapipe": "requirements-mediapipe.txt", "train": "requirements-train.txt",
               "web": "requirements-web.txt", "dev": "requirements-dev.txt", "batch": "requirements-batch.txt",
               "teach": "requirements-teach.txt"}
# The wheels that all install the same cv2 package: two of them in one environment overwrite each
# other's files, and removing either breaks cv2.
OPENCV_WHEELS = frozenset({"opencv-python", "opencv-contrib-python", "opencv-python-headless",
                           "opencv-contrib-python-headless"})
# Pinned packages known to require an OpenCV wheel themselves (their metadata), for environments
# where they are not installed; where they are, their installed metadata is read as well.
REQUIRES_OPENCV = {"mediapipe": "opencv-contrib-python"}


def pins(path: Path) -> set[str]:
    """Requirement lines of one file, without comments and ``-r`` includes."""
    out = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            out.add(re.sub(r"\s+", "", line).lower())
    return out


def normalised(reqs: list[str]) -> set[str]:
    return {re.sub(r"\s+", "", r).lower() for r in reqs}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def names(path: Path) -> set[str]:
    return {canonical(re.split(r"[<>=!~;\[ ]", pin, maxsplit=1)[0]) for pin in pins(path)}


def installed_closure(roots: set[str]) -> set[str]:
    """``roots`` and every distribution they require, as far as the requirements are installed here
    (extras-only and other-platform requirements left out)."""
    from packaging.requirements import Requirement

    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in REQUIRES_OPENCV:
            todo.append(REQUIRES_OPENCV[name])
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonical(req.name))
    return seen


def test_dependencies_match_requirements_txt() -> None:
    assert normalised(PYPROJECT["project"]["dependencies"]) == pins(REPO_ROOT / "requirements.txt")


def test_each_extra_matches_its_requirements_file() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    for extra, name in EXTRA_FILES.items():
        path = REPO_ROOT / name
        if not path.is_file():
            assert extra not in extras, f"extra [{extra}] has no {name}"
            continue
        assert normalised(extras.get(extra, [])) == pins(path), f"[{extra}] differs from {name}"
    assert set(extras) <= set(EXTRA_FILES)


def test_every_pin_is_exact() -> None:
    for name in ("requirements.txt", *EXTRA_FILES.values()):
        path = REPO_ROOT / name
        if path.is_file():
            for req in pins(path):
                assert "==" in req, f"{name}: {req} is not pinned"


def test_no_combination_of_extras_holds_two_opencv_wheels() -> None:
    """The runtime and any set of extras (pip install '.[a,b]', or the -r files together, as
    `make test` installs them) resolve to exactly one OpenCV wheel, counting the ones that pinned
    packages pull in (mediapipe requires opencv-contrib-python)."""
    base = installed_closure(names(REPO_ROOT / "requirements.txt"))
    extras = {extra: installed_closure(names(REPO_ROOT / name)) for extra, name in EXTRA_FILES.items()
              if (REPO_ROOT / name).is_file()}
    assert "mediapipe" in extras["mediapipe"]
    for k in range(len(extras) + 1):
        for combo in itertools.combinations(sorted(extras), k):
            wheels = (base.union(*(extras[e] for e in combo))) & OPENCV_WHEELS
            assert len(wheels) == 1, f"runtime + {list(combo)}: OpenCV wheels {sorted(wheels)}"


def test_this_environment_has_one_opencv_wheel() -> None:
    """What the requirement files promise, in the environment that runs the tests."""
    found = set()
    for name in OPENCV_WHEELS:
        try:
            found.add(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    assert len(found) == 1, f"OpenCV wheels installed here: {sorted(found) or 'none'}"


def test_runtime_and_web_are_lean() -> None:
    """The runtime carries neither MediaPipe nor matplotlib (extras), and [web] no test tools."""
    runtime = names(REPO_ROOT / "requirements.txt")
    assert not runtime & {"mediapipe", "matplotlib", "tensorflow-cpu", "ray"}, runtime
    assert not names(REPO_ROOT / "requirements-web.txt") & {"playwright", "httpx2", "pytest"}
    for extra in ("batch", "train"):  # the extras that draw plots
        assert "matplotlib" in names(REPO_ROOT / EXTRA_FILES[extra]), extra


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools (requirements-dev.txt)")
    out = tmp_path_factory.mktemp("wheel")
    # Build from a copy of what the wheel needs, so setuptools leaves no build/ in the repository.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO_ROOT / name, src / name)
    for name in ("realtime", "training", "models"):
        shutil.copytree(REPO_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "-q", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_wheel_carries_packages_models_and_commands(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("realtime/__main__.py", "realtime/blazeface.py", "realtime/web/static/index.html",
                   "realtime/batch/__main__.py", "realtime/batch/report.py",
                   "training/train.py", "realtime/models/gender_vgg16_int8.tflite",
                   "realtime/models/gender_vgg16_int8.json", "realtime/models/face_detection_short_range.tflite",
                   "realtime/models/face_detection_full_range_sparse.tflite", "realtime/models/face_landmark.tflite",
                   "realtime/models/MODEL_CARD.md", "realtime/sample/grace_hopper.jpg",
                   "training/mask_templates/masks.cfg",
                   "training/mask_templates/LICENSE", "training/mask_templates/templates/surgical.png"):
        assert needed in names, needed
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    for command in ("face-gender = realtime.__main__:main", "face-gender-web = realtime.web.__main__:main",
                    "face-gender-train = training.__main__:main", "face-gender-batch = realtime.batch:main"):
        assert command in text
    assert not any(n.startswith(("tests/", "data_cache/", "runs/")) for n in names)


@pytest.mark.slow
def test_installed_commands_work_from_any_folder(wheel: Path, tmp_path: Path) -> None:
    """Install the wheel (no dependencies: this venv has them) into a folder and run the console
    command from another folder, with the repository off the path."""
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check",
                           "-q", "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    command = target / "bin" / "face-gender"
    assert command.is_file()
    version = subprocess.run([sys.executable, str(command), "--version"], cwd=work, env=env,
                             capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.strip() == f"face-gender {PYPROJECT['project']['version']}"
    where = subprocess.run([sys.executable, "-c", "import realtime.paths as p; print(p.GENDER_MODEL)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert where.stdout.strip().startswith(str(target)), where.stdout + where.stderr
    clip = REPO_ROOT / "assets" / "face-demographics-walking-and-pause.mp4"
    run = subprocess.run([sys.executable, str(command), "--source", str(clip), "--output", "out.mp4",
                          "--max-frames", "5", "--no-display", "--no-progress"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (work / "out.mp4").stat().st_size > 0
    for other in ("face-gender-web", "face-gender-train", "face-gender-batch"):
        proc = subprocess.run([sys.executable, str(target / "bin" / other), "--version"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stdout.strip() == f"{other} {PYPROJECT['project']['version']}"
