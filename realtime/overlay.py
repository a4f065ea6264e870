"""Drawing: boxes, labels, confidence, FPS and the live window's panels, on a copy of the frame.

Drawing is always last, on a copy: the picture (with ``--blur``, the frame with its face regions
anonymised, once) is mirrored for a selfie view if asked, then boxes (mirrored with the picture)
and text (never mirrored) are drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .face import Face

COLOURS = {  # BGR
    "female": (180, 80, 230),
    "male": (230, 160, 40),
    "uncertain": (170, 170, 170),
    "pending": (90, 200, 255),
}


def hex_colour(label: str) -> str:
    """A label's overlay colour as CSS hex (``#rrggbb``): reports and pages use the overlay's colours."""
    b, g, r = COLOURS[label]
    return f"#{r:02x}{g:02x}{b:02x}"
FONT = cv2.FONT_HERSHEY_SIMPLEX


def text_scale(height: int) -> tuple[float, int]:
    """Font scale and thickness that read well at this frame height."""
    scale = max(0.4, min(1.6, height / 720 * 0.8))
    return scale, max(1, int(round(scale * 1.6)))


def draw_text(image: np.ndarray, text: str, org: tuple[int, int], scale: float, thickness: int,
              colour: tuple[int, int, int] = (255, 255, 255)) -> None:
    """Text with a dark shadow so it reads on any background (in place), as OpenCV's samples' draw_str.

    The shadow is the same text shifted around by a pixel, not drawn thicker: OpenCV 5 renders a
    thicker stroke as a wider, bolder font, which would stick out past the end of the text.
    """
    x, y = org
    for dx, dy in ((1, 1), (2, 2), (-1, -1), (1, -1), (-1, 1)):
        cv2.putText(image, text, (x + dx, y + dy), FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    cv2.putText(image, text, (x, y), FONT, scale, colour, thickness, cv2.LINE_AA)


def ink_for(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``background`` (BGR)."""
    b, g, r = background
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


def caption(face: Face) -> str:
    """``female 0.93``; ``male? 0.70`` for an uncertain face that leans male (0.70 is its probability
    of male); ``uncertain (child)``; ``...`` while a face waits for its first result."""
    if face.label is None:
        return "..."
    if face.reason:
        return f"{face.label} ({face.reason})"
    if face.lean and face.confidence is not None:
        return f"{face.lean}? {face.confidence:.2f}"
    return face.label if face.confidence is None else f"{face.label} {face.confidence:.2f}"


def mirror_box(box: tuple[int, int, int, int], width: int) -> tuple[int, int, int, int]:
    x, y, w, h = box
    return width - x - w, y, w, h


def draw_faces(frame: np.ndarray, faces: Sequence[Face], fps: float | None = None, mirror: bool = False,
               ) -> np.ndarray:
    """A copy of ``frame`` with every face boxed and labelled, and the FPS in the top-left.

    ``mirror`` flips the picture left-right (selfie view) with its boxes, while the text stays
    readable. Blurring (``--blur``) happens before, once, on the picture that every output and the
    window then draw on (:meth:`realtime.pipeline.FacePipeline.draw`)."""
    out = np.ascontiguousarray(frame[:, ::-1]) if mirror else frame.copy()
    scale, thick = text_scale(out.shape[0])
    for face in faces:
        x, y, w, h = mirror_box(face.box, out.shape[1]) if mirror else face.box
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


def _panel(image: np.ndarray, lines: Sequence[str], anchor: str = "top-left",
           colours: Sequence[tuple[int, int, int]] | None = None) -> None:
    """Lines of text on a dark, half-transparent box that reads on bright and dark scenes (in place)."""
    if not lines:
        return
    h, w = image.shape[:2]
    scale, thick = text_scale(h)
    sizes = [cv2.getTextSize(line, FONT, scale, thick) for line in lines]
    # Shrink the text until the widest line fits (a 320 px window still shows the whole panel).
    while max(tw for (tw, _), _ in sizes) + 16 > w and scale > 0.3:
        scale *= 0.85
        thick = max(1, int(round(scale * 1.6)))
        sizes = [cv2.getTextSize(line, FONT, scale, thick) for line in lines]
    line_h = max(th + base for (_, th), base in sizes) + 6
    box_w = max(tw for (tw, _), _ in sizes) + 16
    box_h = line_h * len(lines) + 8
    x0 = 4 if "left" in anchor else max(0, w - box_w - 4)
    y0 = 4 if anchor.startswith("top") else max(0, h - box_h - 4)
    if anchor == "centre":
        x0, y0 = max(0, (w - box_w) // 2), max(0, (h - box_h) // 2)
    x1, y1 = min(w, x0 + box_w), min(h, y0 + box_h)
    region = image[y0:y1, x0:x1]
    region[:] = (region.astype(np.float32) * 0.35).astype(np.uint8)  # darken what is behind
    for k, line in enumerate(lines):
        colour = colours[k] if colours and k < len(colours) else (255, 255, 255)
        cv2.putText(image, line, (x0 + 8, y0 + 4 + line_h * (k + 1) - 6), FONT, scale, colour, thick, cv2.LINE_AA)


@dataclass
class LiveStatus:
    """What the live window shows besides the faces."""

    fps: float | None = None
    faces_now: int = 0
    seen: dict[str, int] | None = None  # distinct tracks this session by label
    recording: bool = False
    paused: bool = False
    toast: str | None = None  # a short message (e.g. the snapshot's path)
    show_help: bool = False


HELP_LINES = ("space  pause / resume", "s      snapshot (PNG)", "r      start / stop recording",
              "h      this help", "q/Esc  quit")


KEY_HINT = "space pause  s snapshot  r record  h help  q quit"
BAR_BACKGROUND = (28, 28, 28)


def draw_status(image: np.ndarray, status: LiveStatus) -> np.ndarray:
    """The window's image: the picture (with the key help over its centre when asked) and, below
    it, a status bar that never covers a face: FPS, faces now and distinct tracks seen by label,
    REC / PAUSED on the right; under them the last message (a snapshot's path) or the keys."""
    if status.show_help:
        _panel(image, ["keys", *HELP_LINES], "centre")
    h, w = image.shape[:2]
    white: tuple[int, int, int] = (255, 255, 255)
    first: list[tuple[str, tuple[int, int, int]]] = []
    if status.fps is not None:
        first.append((f"{status.fps:.1f} FPS", white))
    first.append((f"faces now: {status.faces_now}", white))
    if status.seen is not None:
        first += [(f"{label} {status.seen.get(label, 0)}", COLOURS[label]) for label in ("female", "male", "uncertain")]
        first[-3] = (f"seen: {first[-3][0]}", COLOURS["female"])
    badges = " ".join(b for b, on in (("REC", status.recording), ("PAUSED", status.paused)) if on)
    second = status.toast or KEY_HINT
    scale, thick = text_scale(max(h, 360))
    gap = "   "

    def width(text: str, sc: float, th: int) -> int:
        return cv2.getTextSize(text, FONT, sc, th)[0][0]

    line = gap.join(t for t, _ in first) + (gap + badges if badges else "")
    while max(width(line, scale, thick), width(second, scale, thick)) + 16 > w and scale > 0.3:
        scale *= 0.9
        thick = max(1, int(round(scale * 1.6)))
    line_h = cv2.getTextSize("Ag", FONT, scale, thick)[0][1] + 10
    bar = np.full((2 * line_h + 8, w, 3), BAR_BACKGROUND, np.uint8)
    x = 8
    for text, colour in first:
        draw_text(bar, text, (x, line_h), scale, thick, colour)
        x += width(text + gap, scale, thick)
    if badges:
        draw_text(bar, badges, (max(x, w - 8 - width(badges, scale, thick)), line_h), scale, thick,
                  (60, 60, 255) if status.recording else white)
    draw_text(bar, fit_text(second, w - 16, scale, thick), (8, 2 * line_h), scale, thick,
              white if status.toast else (170, 170, 170))
    return np.vstack([image, bar])


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
        cell = sheet[y + tile_px : y + tile_px + cap_h, x : x + tile_px]  # a view: text cannot spill over
        for k, line in enumerate(text.split("\n")[:2]):
            draw_text(cell, fit_text(line, tile_px - 8, 0.42, 1), (4, 14 + 16 * k), 0.42, 1)
    return sheet


def fit_text(text: str, width_px: int, scale: float, thickness: int) -> str:
    """``text``, shortened in the middle with ".." until it is at most ``width_px`` wide (keeps a file's end)."""
    def width(t: str) -> int:
        return cv2.getTextSize(t, FONT, scale, thickness)[0][0] + 2  # + the shadow's shift
    if width(text) <= width_px:
        return text
    head, tail = len(text) // 2, len(text) - len(text) // 2
    while head + tail > 1:
        if head >= tail:
            head -= 1
        else:
            tail -= 1
        short = f"{text[:head]}..{text[len(text) - tail:]}"
        if width(short) <= width_px:
            return short
    return text[:1]
