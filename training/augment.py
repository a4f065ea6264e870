"""Training-time augmentation of cached face crops (BGR uint8, square)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .masks import Template, add_mask, has_landmarks


@dataclass
class AugmentConfig:
    mask_prob: float = 0.4
    flip_prob: float = 0.5
    max_rotation_deg: float = 10.0
    # Framing: the view's side relative to the runtime crop (log-uniform; >1 is looser), and its
    # centre's shift as a share of the view. Other detectors, odd webcam angles and hand-made
    # crops frame faces well beyond BlazeFace's own jitter, so the range is wide.
    scale_range: tuple[float, float] = (0.8, 1.35)
    max_shift: float = 0.08
    colour_prob: float = 0.8
    gray_prob: float = 0.08
    blur_prob: float = 0.2
    lowres_prob: float = 0.2
    jpeg_prob: float = 0.3




def framing_matrix(window: int, context: float, out: int, scale: float, shift: tuple[float, float],
                   angle: float) -> np.ndarray:
    """Affine map from a cached window (``window`` px, ``context`` x the runtime crop) to an
    ``out`` px view whose side is ``scale`` x the runtime crop, centred ``shift`` (share of the
    view) from the window's centre, rotated by ``angle`` degrees."""
    view = window / context * scale
    cx = window / 2.0 + shift[0] * view
    cy = window / 2.0 + shift[1] * view
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, out / view)
    matrix[:, 2] += (out / 2.0 - cx, out / 2.0 - cy)
    return matrix


def augment(crop: np.ndarray, points: np.ndarray | None, rng: np.random.Generator,
            cfg: AugmentConfig, templates: list[Template] | None = None, context: float = 1.0
            ) -> np.ndarray:
    """One random view of a cached window ``crop`` (``context`` x the runtime crop, landmarks
    ``points`` normalised to it); the output is the runtime crop's size, uint8."""
    img = crop
    size = int(round(img.shape[0] / context))
    if cfg.mask_prob and has_landmarks(points) and rng.random() < cfg.mask_prob:
        img = add_mask(img, points, rng, templates)
    # Geometry: one affine warp for rotation, framing scale and framing shift.
    angle = rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg)
    scale = float(np.exp(rng.uniform(*np.log(cfg.scale_range))))
    shift = tuple(rng.uniform(-cfg.max_shift, cfg.max_shift, 2))
    matrix = framing_matrix(img.shape[0], context, size, scale, shift, angle)
    img = cv2.warpAffine(img, matrix, (size, size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < cfg.flip_prob:
        img = img[:, ::-1]
    if rng.random() < cfg.colour_prob:
        f = img.astype(np.float32)
        f = f * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30)  # contrast, brightness
        gray = f.mean(axis=2, keepdims=True)
        f = gray + (f - gray) * rng.uniform(0.6, 1.4)  # saturation
        f *= rng.uniform(0.9, 1.1, 3)  # white balance
        img = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < cfg.gray_prob:
        img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    if rng.random() < cfg.blur_prob:
        k = int(rng.choice([3, 5]))
        img = cv2.GaussianBlur(img, (k, k), 0)
    if rng.random() < cfg.lowres_prob:  # small, far faces
        small = int(size * rng.uniform(0.2, 0.5))
        img = cv2.resize(cv2.resize(img, (small, small), interpolation=cv2.INTER_AREA), (size, size))
    if rng.random() < cfg.jpeg_prob:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 90))])
        if ok:
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return np.ascontiguousarray(img)


def masked_copy(crop: np.ndarray, points: np.ndarray | None, seed: int,
                templates: list[Template] | None = None) -> np.ndarray:
    """A deterministic masked version of a crop, for the masked validation/test reports."""
    return add_mask(crop, points, np.random.default_rng(seed), templates)
