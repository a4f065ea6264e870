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
    scale_range: tuple[float, float] = (0.9, 1.12)
    max_shift: float = 0.06
    colour_prob: float = 0.8
    gray_prob: float = 0.08
    blur_prob: float = 0.2
    lowres_prob: float = 0.2
    jpeg_prob: float = 0.3




def augment(crop: np.ndarray, points: np.ndarray | None, rng: np.random.Generator,
            cfg: AugmentConfig, templates: list[Template] | None = None) -> np.ndarray:
    """One random view of ``crop``; output has the same size and dtype."""
    img = crop
    size = img.shape[0]
    if cfg.mask_prob and has_landmarks(points) and rng.random() < cfg.mask_prob:
        img = add_mask(img, points, rng, templates)
    # Geometry: one affine warp for rotation, scale (box-size jitter) and shift (box-centre jitter).
    angle = rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg)
    scale = rng.uniform(*cfg.scale_range)
    tx, ty = rng.uniform(-cfg.max_shift, cfg.max_shift, 2) * size
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    matrix[:, 2] += (tx, ty)
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
