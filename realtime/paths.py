"""Locations of the files the package ships."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"
ASSETS_DIR = REPO_ROOT / "assets"

DETECTOR_MODELS = {
    "short": MODELS_DIR / "face_detection_short_range.tflite",
    "full": MODELS_DIR / "face_detection_full_range_sparse.tflite",
}
LANDMARK_MODEL = MODELS_DIR / "face_landmark.tflite"
GENDER_MODEL = MODELS_DIR / "gender_vgg16_int8.tflite"
DEMO_CLIP = ASSETS_DIR / "face-demographics-walking-and-pause.mp4"
