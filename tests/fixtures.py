"""Test data the tests make themselves: face images, tiny labelled datasets, a tiny model.

The only real face is the package's sample photo of Grace Hopper (realtime/sample/, the copy that
matplotlib ships; 600 x 512, the short-range BlazeFace detector finds it). Datasets are variants of
it with synthetic labels: "female" images are in colour, "male" images are grayscale. That is no
statement about people; it gives the pipeline a signal that a tiny model can learn exactly, so
metrics have known answers.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"  # local datasets, never committed; absent in CI
# Variants of the photo: (scale, flip); with the canvas the face box side ranges ~60-150 px.
VARIANTS = ((0.3, False), (0.45, True), (0.6, False), (0.75, True), (0.4, False), (0.55, True))


def face_photo() -> np.ndarray:
    """The Grace Hopper sample photo as BGR uint8."""
    from realtime.paths import SAMPLE_FACE

    image = cv2.imread(str(SAMPLE_FACE), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(SAMPLE_FACE)
    return image


def place_on_canvas(photo: np.ndarray, scale: float, flip: bool, rng: np.random.Generator,
                    background: tuple[int, int, int]) -> np.ndarray:
    """The photo scaled, maybe mirrored, at a random place on a larger plain canvas."""
    small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    if flip:
        small = small[:, ::-1]
    h, w = small.shape[:2]
    side = int(max(h, w) * 1.3)
    canvas = np.empty((side, side, 3), np.uint8)
    canvas[:] = background
    y, x = int(rng.integers(0, side - h + 1)), int(rng.integers(0, side - w + 1))
    canvas[y : y + h, x : x + w] = small
    return canvas


def colour_variant(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """White balance and brightness jitter (keeps the image clearly coloured)."""
    f = image.astype(np.float32) * rng.uniform(0.85, 1.15, 3) + rng.uniform(-20, 20)
    return np.clip(f, 0, 255).astype(np.uint8)


def gray_variant(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grayscale (B = G = R) with contrast and brightness jitter."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    gray = np.clip(gray * rng.uniform(0.85, 1.15) + rng.uniform(-20, 20), 0, 255).astype(np.uint8)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


@dataclass
class FaceDataset:
    root: Path
    per_class: int
    faces: list[Path]  # images with a detectable face
    no_face: list[Path]  # readable images without a face (in female/)
    unreadable: list[Path]  # a corrupt file and a zero-byte file

    @property
    def readable(self) -> int:
        return len(self.faces) + len(self.no_face)


def make_face_dataset(root: Path, per_class: int = 14, extras: bool = True, seed: int = 0) -> FaceDataset:
    """``root/female`` (colour JPEGs) and ``root/male`` (grayscale PNGs) with UTKFace-style names.

    File names are ``AGE_GENDER_RACE_INDEX`` (gender 1 female, 0 male; race 0..4). With ``extras``
    a plain coloured canvas without a face goes into female/, a corrupt JPEG into male/ and a
    zero-byte PNG into female/.
    """
    rng = np.random.default_rng(seed)
    photo = face_photo()
    faces: list[Path] = []
    for label, code in (("female", 1), ("male", 0)):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            scale, flip = VARIANTS[i % len(VARIANTS)]
            age, race = 20 + 7 * (i % 8), i % 5
            if label == "female":
                background = tuple(int(v) for v in rng.integers(40, 220, 3))
                image = colour_variant(place_on_canvas(photo, scale, flip, rng, background), rng)
                path = folder / f"{age}_{code}_{race}_{i:04d}.jpg"
            else:
                level = int(rng.integers(40, 220))
                image = gray_variant(place_on_canvas(photo, scale, flip, rng, (level,) * 3), rng)
                path = folder / f"{age}_{code}_{race}_{i:04d}.png"
            cv2.imwrite(str(path), image)
            faces.append(path)
    no_face: list[Path] = []
    unreadable: list[Path] = []
    if extras:
        blank = np.empty((240, 320, 3), np.uint8)
        blank[:] = (200, 120, 40)
        no_face.append(root / "female" / "blank.jpg")
        cv2.imwrite(str(no_face[0]), blank)
        corrupt, empty = root / "male" / "corrupt.jpg", root / "female" / "empty.png"
        corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
        empty.write_bytes(b"")
        unreadable += [corrupt, empty]
    return FaceDataset(root, per_class, faces, no_face, unreadable)


def write_metadata(model_path: Path, input_size: int, **overrides: object) -> Path:
    """The metadata JSON the runtime reads, beside ``model_path``."""
    meta = {"input_size": input_size, "colour_order": "BGR", "crop_margin": 0.1,
            "labels": {"positive": "female", "negative": "male"}, "threshold": 0.5,
            "uncertain_band": [0.4, 0.6], **overrides}
    path = model_path.with_suffix(".json")
    path.write_text(json.dumps(meta, indent=2))
    return path


def make_colour_model(path: Path, size: int = 32) -> Path:
    """A tiny float TFLite "gender" model: p_female is high for coloured crops, low for gray ones.

    Needs TensorFlow. p = sigmoid(0.25 * sum of mean positive channel differences - 3), so a
    grayscale crop gives 0.047 and a clearly coloured crop gives nearly 1.
    """
    import tempfile

    import keras
    import tensorflow as tf

    inputs = keras.Input((size, size, 3))
    diffs = keras.layers.Conv2D(6, 1, use_bias=False, name="channel_diffs")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(diffs))
    outputs = keras.layers.Dense(1, activation="sigmoid", name="p_female")(x)
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((1, 1, 3, 6), np.float32)
    for k, (a, b) in enumerate(((0, 1), (1, 0), (1, 2), (2, 1), (0, 2), (2, 0))):
        kernel[0, 0, a, k], kernel[0, 0, b, k] = 1.0, -1.0
    model.get_layer("channel_diffs").set_weights([kernel])
    model.get_layer("p_female").set_weights([np.full((6, 1), 0.25, np.float32), np.array([-3.0], np.float32)])
    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(tmp).convert())
    write_metadata(path, size)
    return path


def make_age_model(path: Path, size: int = 32) -> Path:
    """A tiny float TFLite with two named outputs, as the age-head export writes them: ``p_female``
    as in :func:`make_colour_model`, and ``age`` = 80 x the mean of the LEFT half of channel 0 / 255
    (years), so mirrored crops give different ages (for flip averaging). Needs TensorFlow."""
    import tempfile

    import keras
    import tensorflow as tf

    inputs = keras.Input((size, size, 3), name="bgr_0_255")
    diffs = keras.layers.Conv2D(6, 1, use_bias=False, name="channel_diffs")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(diffs))
    gender = keras.layers.Dense(1, activation="sigmoid", name="p_female")(x)
    left = keras.layers.Cropping2D(((0, 0), (0, size // 2)))(inputs)
    a = keras.layers.GlobalAveragePooling2D()(left)
    age = keras.layers.Dense(1, name="age")(a)
    model = keras.Model(inputs, {"p_female": gender, "age": age})
    kernel = np.zeros((1, 1, 3, 6), np.float32)
    for k, (a_, b_) in enumerate(((0, 1), (1, 0), (1, 2), (2, 1), (0, 2), (2, 0))):
        kernel[0, 0, a_, k], kernel[0, 0, b_, k] = 1.0, -1.0
    model.get_layer("channel_diffs").set_weights([kernel])
    model.get_layer("p_female").set_weights([np.full((6, 1), 0.25, np.float32), np.array([-3.0], np.float32)])
    model.get_layer("age").set_weights([np.array([[80 / 255], [0], [0]], np.float32), np.zeros(1, np.float32)])
    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(tmp).convert())
    write_metadata(path, size, outputs={"p_female": "p_female", "apparent_age": "age"}, child_age=13)
    return path


def run_training(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python -m training ARGS`` in the repository root, output captured."""
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def png_bomb(width: int, height: int) -> bytes:
    """A valid 8-bit gray PNG of zeros: a few hundred kB at most that decode to width x height x 3 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@contextmanager
def uvicorn_server(app: object, **config: object) -> Iterator[int]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread (as ``python -m realtime.web``
    does); yields the port, and stops the server on the way out."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                                           **config))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the web app did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=20)
