"""The browser's webcam over a WebSocket: one tracked pipeline per connection."""

from __future__ import annotations

import logging
import time
from typing import Any

from ..classifier import GenderClassifier
from ..pipeline import build_pipeline
from ..sources import (
    Frame,
    ImageTooLargeError,
    Source,
    decode_image_limited,
)
from .common import (
    Settings,
    face_json,
)

log = logging.getLogger(__name__)

# --- webcam ---------------------------------------------------------------------------------------
class BrowserCamera(Source):
    """The user's webcam, frames arriving over a WebSocket. Only describes the source to
    :func:`build_pipeline` (short-range detector, video mode, background classification)."""

    live = True
    close_range = True
    kind = "camera"


class LiveSession:
    """One pipeline per WebSocket connection, so tracking and per-track smoothing work."""

    def __init__(self, settings: Settings, classifier: GenderClassifier, blur: bool = False) -> None:
        # Its own tracker and detector (video mode keeps state per stream), the app's one classifier.
        self.pipeline = build_pipeline(settings.pipeline(blur), BrowserCamera("browser"), classifier)
        self.max_pixels = settings.max_live_pixels
        self.start = time.monotonic()
        self.index = 0

    def process(self, data: bytes) -> dict[str, Any]:
        """Faces in one webcam frame. Its pixels are counted from its header before it is decoded;
        each connection decodes one frame at a time, and there are at most ``max_live_sessions``."""
        t0 = time.perf_counter()
        try:
            image = decode_image_limited(data, self.max_pixels)
        except ImageTooLargeError as exc:
            return {"error": f"a webcam frame of {exc}"}
        if image is None:
            return {"error": "a webcam frame could not be decoded (send JPEG images)"}
        frame = Frame(self.index, time.monotonic() - self.start, image)
        self.index += 1
        faces = self.pipeline.process(frame)
        return {"frame": frame.index, "width": image.shape[1], "height": image.shape[0],
                "faces": [face_json(f) for f in faces], "ms": round((time.perf_counter() - t0) * 1000, 1)}

    def close(self) -> None:
        self.pipeline.close()


