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
    # What in-the-wild photos bring and UTKFace lacks: turned heads (a horizontal squeeze of one
    # side, as a yaw foreshortens it), low light (darker, lower contrast, sensor noise), colour casts
    # (tungsten, fluorescent, screens) and faces partly covered (a hand, hair, another face).
    yaw_prob: float = 0.2
    dark_prob: float = 0.15
    cast_prob: float = 0.2
    occlude_prob: float = 0.15



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
    if rng.random() < cfg.yaw_prob:
        img = _yaw(img, rng)
    if rng.random() < cfg.flip_prob:
        img = img[:, ::-1]
    if rng.random() < cfg.colour_prob:
        f = img.astype(np.float32)
        f = f * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30)  # contrast, brightness
        gray = f.mean(axis=2, keepdims=True)
        f = gray + (f - gray) * rng.uniform(0.6, 1.4)  # saturation
        f *= rng.uniform(0.9, 1.1, 3)  # white balance
        img = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < cfg.cast_prob:
        img = np.clip(img.astype(np.float32) * _cast(rng), 0, 255).astype(np.uint8)
    if rng.random() < cfg.dark_prob:
        img = _low_light(img, rng)
    if rng.random() < cfg.occlude_prob:
        img = _occlude(img, rng)
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


def _yaw(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A head turned to one side, roughly: the far half of the face squeezed, the near half
    stretched (a perspective warp about the vertical axis)."""
    size = img.shape[0]
    k = rng.uniform(0.08, 0.2) * size * (1 if rng.random() < 0.5 else -1)
    src = np.float32([[0, 0], [size, 0], [size, size], [0, size]])
    dst = np.float32([[0, -k / 2], [size, k / 2], [size, size - k / 2], [0, size + k / 2]])
    return cv2.warpPerspective(img, cv2.getPerspectiveTransform(src, dst), (size, size),
                               borderMode=cv2.BORDER_REPLICATE)


def _cast(rng: np.random.Generator) -> np.ndarray:
    """Per-channel gains (BGR) of a strong colour cast: warm, cool, green or magenta."""
    kind = int(rng.integers(4))
    strength = rng.uniform(0.1, 0.3)
    gains = {0: (1 - strength, 1.0, 1 + strength), 1: (1 + strength, 1.0, 1 - strength),
             2: (1 - strength / 2, 1 + strength / 2, 1 - strength / 2), 3: (1 + strength / 2, 1 - strength / 2,
                                                                            1 + strength / 2)}[kind]
    return np.float32(gains)


def _low_light(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Underexposed: darker (gamma), flatter, with sensor noise."""
    f = img.astype(np.float32) / 255.0
    f = f ** rng.uniform(1.3, 2.2) * rng.uniform(0.35, 0.8)
    f = f * 255.0 + rng.normal(0.0, rng.uniform(2.0, 8.0), f.shape)
    return np.clip(f, 0, 255).astype(np.uint8)


def _occlude(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A part of the face covered: an ellipse (a hand, a strand of hair, another face's edge) of a
    skin, hair or random colour, entering from an edge, never over most of the face."""
    size = img.shape[0]
    out = img.copy()
    side = int(rng.integers(4))
    a, b = rng.uniform(0.15, 0.35) * size, rng.uniform(0.1, 0.3) * size
    along = rng.uniform(0.2, 0.8) * size
    edge = rng.uniform(0.0, 0.15) * size
    cx, cy = {0: (edge, along), 1: (size - edge, along), 2: (along, size - edge), 3: (along, edge)}[side]
    palette = [(80, 110, 160), (110, 150, 200), (60, 80, 120), (20, 20, 25), (40, 60, 90)]
    colour = palette[int(rng.integers(len(palette)))] if rng.random() < 0.8 else tuple(rng.integers(0, 255, 3))
    cv2.ellipse(out, (int(cx), int(cy)), (int(a), int(b)), float(rng.uniform(0, 180)), 0, 360,
                tuple(int(c) for c in colour), -1, cv2.LINE_AA)
    shade = rng.uniform(0.8, 1.0)
    return cv2.addWeighted(out, shade, img, 1.0 - shade, 0.0)
