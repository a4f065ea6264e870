"""Images uploaded to the web app: labelled one at a time, never written to disk."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, BinaryIO

from ..pipeline import FacePipeline, PipelineConfig, build_pipeline
from ..sources import (
    Frame,
    ImageFileSource,
)
from .common import (
    Settings,
    decode_upload,
    face_json,
    jpeg_data_url,
)

log = logging.getLogger(__name__)

# --- images ---------------------------------------------------------------------------------------
class StillImages:
    """Label uploaded images with one still-image pipeline (models loaded once, one image at a time)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        config = PipelineConfig(model=settings.model, threads=settings.threads,
                                detector_backend=settings.detector_backend)
        # Uploads have the traits of an image source (never opened): the still-image detector.
        self.pipeline: FacePipeline = build_pipeline(config, ImageFileSource(Path("upload.jpg")))
        self.lock = threading.Lock()

    def label(self, name: str, fileobj: BinaryIO, blur: bool = False) -> dict[str, Any]:
        """Read, decode, label, draw and encode one image. All of it holds the lock: one decoded
        image at a time, however many uploads arrive together (the others wait, spooled on disk).
        ``blur`` anonymises the faces in the returned picture."""
        with self.lock:
            self.pipeline.blur = blur
            image = decode_upload(name, fileobj.read(), self.settings.max_image_pixels)
            frame = Frame(0, 0.0, image, name)
            self.pipeline.tracker.reset(restart_ids=True)  # each upload is its own picture: ids from 1
            faces = self.pipeline.process(frame)
            data_url = jpeg_data_url(self.pipeline.annotate(frame, faces))
            height, width = image.shape[:2]
            del frame, image  # the decoded image goes before the next upload is decoded
        record = [face_json(f) for f in faces]
        return {"kind": "image", "name": name, "width": width, "height": height, "faces": record,
                "image": data_url, "message": None if faces else "No faces found in this image."}

    def close(self) -> None:
        with self.lock:
            self.pipeline.close()


