"""Shared pytest fixtures. Tests make their own data (see ``tests/fixtures.py``); nothing is downloaded.

Tests marked ``shared`` need ``../shared`` (datasets that are never committed) and are skipped
when it is absent, as in CI.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures import REPO_ROOT, SHARED_DIR, FaceDataset, face_photo, make_colour_model, make_face_dataset

# Bounded threads in this process and every process a test starts: `make test` must pass on a busy
# 2-core machine, where a test that starts as many threads as it likes fails with "can't start new
# thread". (Each variable caps one library's pool; the tests' own thread pools are bounded in the tests.)
for _var, _value in (("OMP_NUM_THREADS", "2"), ("OPENBLAS_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"),
                     ("TF_NUM_INTRAOP_THREADS", "2"), ("TF_NUM_INTEROP_THREADS", "1")):
    os.environ.setdefault(_var, _value)

if str(REPO_ROOT) not in sys.path:  # plain `pytest` (not `python -m pytest`) from any folder
    sys.path.insert(0, str(REPO_ROOT))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SHARED_DIR.is_dir():
        return
    skip = pytest.mark.skip(reason=f"needs {SHARED_DIR} (not available here)")
    for item in items:
        if "shared" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def face_image() -> np.ndarray:
    """The Grace Hopper photo (BGR, 600 x 512, one frontal face). Read-only: copy before drawing."""
    image = face_photo()
    image.flags.writeable = False
    return image


@pytest.fixture(scope="session")
def face_dataset(tmp_path_factory: pytest.TempPathFactory) -> FaceDataset:
    """female/ (colour) and male/ (grayscale) variants of the face photo, plus a no-face image,
    a corrupt and a zero-byte file. Read-only: copy it before changing anything."""
    return make_face_dataset(tmp_path_factory.mktemp("faces"))


@pytest.fixture(scope="session")
def colour_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny float .tflite (32 px) + metadata: p_female ~1 for colour crops, 0.047 for gray ones."""
    pytest.importorskip("tensorflow", reason="building the tiny test model needs TensorFlow")
    return make_colour_model(tmp_path_factory.mktemp("colour_model") / "colour.tflite")


@pytest.fixture(scope="session")
def prepared_cache(face_dataset: FaceDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``face_dataset`` prepared into a crops cache at 64 px (``training.data.prepare``). Read-only."""
    from training.data import folder_items, prepare

    out = tmp_path_factory.mktemp("cache") / "faces64"
    prepare(folder_items(face_dataset.root), out, size=64)
    return out


# --- the web app's tests (fastapi imported only when a web test asks) ----------------------------
@pytest.fixture(scope="session")
def web_model(request: pytest.FixtureRequest) -> Path:
    """The colour test model when TensorFlow can build it, else the shipped model, else skip."""
    if importlib.util.find_spec("tensorflow") is not None:
        return request.getfixturevalue("colour_model")
    from realtime.paths import GENDER_MODEL

    if GENDER_MODEL.is_file():
        return GENDER_MODEL
    pytest.skip("needs TensorFlow (to build the test model) or models/gender_vgg16_int8.tflite")


@pytest.fixture
def settings(web_model: Path, tmp_path: Path) -> Any:
    """The web app's ``Settings`` with the test model and a fresh work folder."""
    from realtime.web.app import Settings

    workdir = tmp_path / "work"
    workdir.mkdir()
    return Settings(model=web_model, workdir=workdir)


@pytest.fixture
def client(settings: Any) -> Iterator[Any]:
    """A ``TestClient`` of the app built from ``settings``."""
    from fastapi.testclient import TestClient

    from realtime.web.app import create_app

    with TestClient(create_app(settings)) as c:
        yield c
