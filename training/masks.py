"""Synthetic face masks placed from face-mesh landmarks.

Two kinds, both drawn from the nose bridge down to below the chin and out to the cheeks:
  * drawn masks: a polygon along the lower face oval, random colour, pattern (solid, stripes, dots,
    noise, pleats), shading and fit (how high on the nose, how loose around the jaw);
  * templates: MaskTheFace RGBA templates (``masks.cfg`` anchors a..f) warped onto six landmarks.
Landmarks are ``(468, 2)`` normalised to the crop, as cached by ``training.data``.
"""

from __future__ import annotations

import configparser
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .landmarks import CHIN, LEFT_CHEEK, RIGHT_CHEEK

log = logging.getLogger(__name__)

# MaskTheFace templates (MIT), frontal ones downscaled, shipped with the package: masked
# augmentation works out of the box (scripts/downscale_mask_templates.py made them).
BUNDLED_TEMPLATES = Path(__file__).resolve().parent / "mask_templates"

# Lower face oval from the right cheek, round the chin, to the left cheek (mesh indices).
LOWER_OVAL = [454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150, 136, 172,
              58, 132, 93, 234]
NOSE_TOP, NOSE_MID, NOSE_LOW = 6, 197, 195
# Template anchors a..f (MaskTheFace): top-left, nose bridge, top-right, lower-left, chin,
# lower-right, mapped to the mesh points (subject's right cheek is image left).
TEMPLATE_ANCHORS = {"a": 234, "b": NOSE_MID, "c": 454, "d": 172, "e": CHIN, "f": 397}

PALETTE = [  # BGR colours seen on real masks
    (230, 200, 140), (210, 170, 90), (245, 245, 245), (30, 30, 30), (60, 60, 60), (180, 180, 180),
    (200, 180, 230), (90, 120, 60), (130, 60, 20), (60, 60, 160), (210, 230, 240), (150, 110, 70),
]


@dataclass
class Template:
    name: str
    rgba: np.ndarray  # H x W x 4, BGRA
    anchors: np.ndarray  # 6 x 2 in template pixels, order a..f


def resolve_templates(value: str | Path | None) -> Path | None:
    """``--mask-templates``: ``bundled`` (the default), ``none`` (drawn masks only) or a folder,
    which must exist and hold ``masks.cfg``."""
    from realtime.errors import UserError

    if value is None or str(value) == "bundled":
        return BUNDLED_TEMPLATES
    if str(value) == "none":
        return None
    folder = Path(value)
    if not (folder / "masks.cfg").is_file():
        raise UserError(f"--mask-templates {folder}: no masks.cfg there (give a MaskTheFace masks folder, "
                        "'bundled' or 'none')")
    return folder


def load_templates(folder: Path | None, frontal_only: bool = True) -> list[Template]:
    """Read MaskTheFace templates (``masks.cfg`` + ``templates/*.png``); [] when absent."""
    if folder is None:
        return []
    cfg_path = folder / "masks.cfg"
    if not cfg_path.is_file():
        return []
    cfg = configparser.ConfigParser()
    try:
        cfg.read(cfg_path)
    except configparser.Error as exc:
        from realtime.errors import UserError

        raise UserError(f"{cfg_path}: not a valid masks.cfg ({exc})") from exc
    templates = []
    for name in cfg.sections():
        sec = cfg[name]
        if "template" not in sec or (frontal_only and name.endswith(("_left", "_right"))):
            continue
        path = folder / "templates" / Path(sec["template"]).name
        rgba = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if rgba is None or rgba.ndim != 3 or rgba.shape[2] != 4:
            log.warning("skipping mask template %s (not an RGBA image)", path)
            continue
        anchors = np.array([[float(v) for v in sec[f"mask_{k}"].split(",")] for k in "abcdef"],
                           dtype=np.float32)
        templates.append(Template(name, rgba, anchors))
    return templates


def has_landmarks(points: np.ndarray | None) -> bool:
    return points is not None and bool(np.isfinite(points).all())


def mask_polygon(points: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Polygon (pixels) of a drawn mask with a random fit: nose, right cheek, jaw, left cheek."""
    p = points.astype(np.float32) * size
    # Top edge: somewhere on the nose bridge; loose fits sit lower.
    nose = p[NOSE_TOP] + (p[NOSE_LOW] - p[NOSE_TOP]) * rng.uniform(0.35, 1.0)
    oval = p[LOWER_OVAL]
    centre = oval.mean(axis=0)
    oval = centre + (oval - centre) * rng.uniform(1.0, 1.12)
    right, left = oval[0].copy(), oval[-1].copy()
    cheek_y = nose[1] + rng.uniform(0.0, 0.06) * size
    right[1] = max(right[1], cheek_y)
    left[1] = max(left[1], cheek_y)
    lift = np.array([0.0, -0.02 * size], np.float32)
    poly = [nose, (nose + right) / 2 + lift, right, *oval[1:-1], left, (left + nose) / 2 + lift]
    return np.array(poly, dtype=np.float32)


def _texture(size: int, colour: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    base = np.empty((size, size, 3), np.float32)
    base[:] = colour
    kind = rng.choice(["solid", "solid", "stripes", "dots", "noise", "pleats"])
    if kind == "stripes":
        period = int(rng.integers(4, 12))
        other = np.array(PALETTE[int(rng.integers(len(PALETTE)))], np.float32)
        rows = (np.arange(size) // period) % 2 == 1
        if rng.random() < 0.5:
            base[rows] = other
        else:
            base[:, rows] = other
    elif kind == "dots":
        other = PALETTE[int(rng.integers(len(PALETTE)))]
        step = int(rng.integers(6, 14))
        for y in range(step // 2, size, step):
            for x in range(step // 2, size, step):
                cv2.circle(base, (x, y), max(1, step // 5), other, -1)
    elif kind == "noise":
        base += rng.normal(0, 18, (size, size, 1)).astype(np.float32)
    elif kind == "pleats":
        step = max(3, size // 12)
        for y in range(0, size, step):
            base[y : y + 1] *= 0.8
    # Soft vertical shading: masks are rounded, so their edges are darker.
    xs = np.linspace(-1, 1, size, dtype=np.float32)
    shade = 1.0 - 0.18 * xs**2
    base *= shade[None, :, None] * rng.uniform(0.8, 1.1)
    return np.clip(base, 0, 255)


def draw_mask(crop: np.ndarray, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``crop`` (BGR, square) wearing a drawn mask."""
    size = crop.shape[0]
    poly = mask_polygon(points, size, rng)
    alpha = np.zeros((size, size), np.float32)
    cv2.fillPoly(alpha, [np.round(poly).astype(np.int32)], 1.0, lineType=cv2.LINE_AA)
    alpha = cv2.GaussianBlur(alpha, (3, 3), 0)[..., None]
    colour = PALETTE[int(rng.integers(len(PALETTE)))] if rng.random() < 0.8 else \
        tuple(int(c) for c in rng.integers(0, 256, 3))
    tex = _texture(size, colour, rng)
    # Keep some of the face's lighting so the mask is lit like the face.
    light = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32)[..., None] / 128.0
    tex = tex * (0.65 + 0.35 * np.clip(light, 0.3, 1.6))
    out = crop.astype(np.float32) * (1 - alpha) + np.clip(tex, 0, 255) * alpha
    # Ear loops now and then.
    if rng.random() < 0.5:
        p = points * size
        for a, b in ((LEFT_CHEEK, 127), (RIGHT_CHEEK, 356)):
            cv2.line(out, tuple(int(v) for v in p[a]), tuple(int(v) for v in p[b]), colour, 1, cv2.LINE_AA)
    return out.astype(np.uint8)


def apply_template(crop: np.ndarray, points: np.ndarray, template: Template,
                   rng: np.random.Generator) -> np.ndarray:
    """A copy of ``crop`` wearing ``template`` warped onto the landmarks."""
    size = crop.shape[0]
    dst = np.array([points[TEMPLATE_ANCHORS[k]] for k in "abcdef"], np.float32) * size
    dst += rng.normal(0, 0.01 * size, dst.shape).astype(np.float32)
    matrix, _ = cv2.findHomography(template.anchors, dst, 0)
    if matrix is None:
        return draw_mask(crop, points, rng)
    warped = cv2.warpPerspective(template.rgba, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
    alpha = warped[..., 3:4].astype(np.float32) / 255.0
    rgb = warped[..., :3].astype(np.float32)
    if rng.random() < 0.4:  # recolour now and then
        hsv = cv2.cvtColor(warped[..., :3], cv2.COLOR_BGR2HSV).astype(np.int32)
        hsv[..., 0] = (hsv[..., 0] + int(rng.integers(0, 180))) % 180
        rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)
    out = crop.astype(np.float32) * (1 - alpha) + rgb * alpha
    return out.astype(np.uint8)


def add_mask(crop: np.ndarray, points: np.ndarray, rng: np.random.Generator,
             templates: list[Template] | None = None, template_share: float = 0.5) -> np.ndarray:
    """A masked copy of ``crop``; the input is returned unchanged when landmarks are missing."""
    if not has_landmarks(points):
        return crop
    if templates and rng.random() < template_share:
        return apply_template(crop, points, templates[int(rng.integers(len(templates)))], rng)
    return draw_mask(crop, points, rng)
