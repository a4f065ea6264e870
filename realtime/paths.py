"""Locations of the files the package ships.

In the repository the models are in the top-level ``models/`` folder; an installed wheel carries
them as the package data of ``realtime.models`` (pyproject.toml maps the folder). Either way they
are found here, never through the current folder.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _models_dir() -> Path:
    """The installed ``realtime.models`` data folder (a namespace package: no ``__init__``), else
    the repository's ``models/``."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("realtime.models")
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(location) / "face_detection_short_range.tflite").is_file():
            return Path(location)
    return REPO_ROOT / "models"


MODELS_DIR = _models_dir()
ASSETS_DIR = REPO_ROOT / "assets"  # the demo clip: in the repository only

DETECTOR_MODELS = {
    "short": MODELS_DIR / "face_detection_short_range.tflite",
    "full": MODELS_DIR / "face_detection_full_range_sparse.tflite",
}
LANDMARK_MODEL = MODELS_DIR / "face_landmark.tflite"
GENDER_MODEL = MODELS_DIR / "gender_vgg16_int8.tflite"
DEMO_CLIP = ASSETS_DIR / "face-demographics-walking-and-pause.mp4"
# A public-domain face photo (realtime/sample/README.md): in the package, so no matplotlib is needed.
SAMPLE_FACE = Path(__file__).resolve().parent / "sample" / "grace_hopper.jpg"
