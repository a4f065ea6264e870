"""Drawing: boxes, labels, confidence and FPS, on a copy of the frame (drawing is always last)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

COLOURS = {  # BGR
    "female": (180, 80, 230),
    "male": (230, 160, 40),
    "uncertain": (170, 170, 170),
    "pending": (90, 200, 255),
}
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class FaceView:
    """What to draw for one face."""

    box: tuple[int, int, int, int]
    label: str | None  # None: no result yet
    confidence: float | None
    track_id: int | None = None


def text_scale(height: int) -> tuple[float, int]:
    """Font scale and thickness that read well at this frame height."""
    scale = max(0.4, min(1.6, height / 720 * 0.8))
    return scale, max(1, int(round(scale * 1.6)))


def draw_text(image: np.ndarray, text: str, org: tuple[int, int], scale: float, thickness: int,
              colour: tuple[int, int, int] = (255, 255, 255)) -> None:
    """Text with a dark shadow so it reads on any background (in place)."""
    x, y = org
    cv2.putText(image, text, (x + 1, y + 1), FONT, scale, (0, 0, 0), thickness + 1, cv2.LINE_AA)
    cv2.putText(image, text, (x, y), FONT, scale, colour, thickness, cv2.LINE_AA)


def ink_for(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``background`` (BGR)."""
    b, g, r = background
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


def caption(face: FaceView) -> str:
    """``female 0.93``; ``...`` while a face waits for its first result."""
    if face.label is None:
        return "..."
    return face.label if face.confidence is None else f"{face.label} {face.confidence:.2f}"


def draw_faces(frame: np.ndarray, faces: Sequence[FaceView], fps: float | None = None) -> np.ndarray:
    """A copy of ``frame`` with every face boxed and labelled, and the FPS in the top-left."""
    out = frame.copy()
    scale, thick = text_scale(out.shape[0])
    for face in faces:
        x, y, w, h = face.box
        colour = COLOURS.get(face.label or "pending", COLOURS["uncertain"])
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, max(2, thick), cv2.LINE_AA)
        text = caption(face)
        (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
        ty = y - 6 if y - th - 10 > 0 else min(out.shape[0] - 4, y + h + th + 6)
        tx = max(0, min(x, out.shape[1] - tw - 4))
        cv2.rectangle(out, (tx, ty - th - 4), (tx + tw + 4, ty + base), colour, -1)
        cv2.putText(out, text, (tx + 2, ty - 2), FONT, scale, ink_for(colour), thick, cv2.LINE_AA)
    if fps is not None:
        _put_fps(out, fps)
    return out


def _put_fps(image: np.ndarray, fps: float) -> None:
    scale, thick = text_scale(image.shape[0])
    draw_text(image, f"{fps:.1f} FPS", (8, int(24 * scale / 0.7)), scale, thick)


def draw_fps(frame: np.ndarray, fps: float) -> np.ndarray:
    """A copy of ``frame`` with the FPS in the top-left corner."""
    out = frame.copy()
    _put_fps(out, fps)
    return out


def contact_sheet(tiles: Sequence[tuple[np.ndarray, str, str]], tile_px: int = 128, columns: int = 8,
                  ) -> np.ndarray:
    """Grid of face crops with a caption under each: ``(crop_bgr, label, caption_text)``."""
    if not tiles:
        out = np.full((tile_px, tile_px * 3, 3), 40, np.uint8)
        draw_text(out, "no faces found", (10, tile_px // 2), 0.7, 1)
        return out
    columns = max(1, min(columns, len(tiles)))
    rows = (len(tiles) + columns - 1) // columns
    cap_h = 36
    sheet = np.full((rows * (tile_px + cap_h), columns * tile_px, 3), 32, np.uint8)
    for i, (crop, label, text) in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = r * (tile_px + cap_h), c * tile_px
        sheet[y : y + tile_px, x : x + tile_px] = cv2.resize(crop, (tile_px, tile_px))
        cv2.rectangle(sheet, (x, y), (x + tile_px - 1, y + tile_px - 1), COLOURS.get(label, COLOURS["uncertain"]), 2)
        for k, line in enumerate(text.split("\n")[:2]):
            draw_text(sheet, line[:22], (x + 4, y + tile_px + 14 + 16 * k), 0.42, 1)
    return sheet
