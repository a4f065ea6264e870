"""Images uploaded to the web app: labelled one at a time, never written to disk."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, BinaryIO

from ..classifier import GenderClassifier
from ..pipeline import FacePipeline, build_pipeline
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
    """Label uploaded images one at a time, with the app's one classifier: one still-image pipeline
    per drawing setting (plain, blurred), built when first needed, never switched in place."""

    def __init__(self, settings: Settings, classifier: GenderClassifier) -> None:
        self.settings = settings
        self.classifier = classifier
        self.pipelines: dict[bool, FacePipeline] = {}
        self.lock = threading.Lock()
        self._pipeline(blur=False)  # the detector loads now: a bad model fails at start, not on an upload

    def _pipeline(self, blur: bool) -> FacePipeline:
        if blur not in self.pipelines:
            # Uploads have the traits of an image source (never opened): the still-image detector.
            self.pipelines[blur] = build_pipeline(self.settings.pipeline(blur), ImageFileSource(Path("upload.jpg")),
                                                  self.classifier)
        return self.pipelines[blur]

    def label(self, name: str, fileobj: BinaryIO, blur: bool = False) -> dict[str, Any]:
        """Read, decode, label, draw and encode one image. All of it holds the lock: one decoded
        image at a time, however many uploads arrive together (the others wait, spooled on disk).
        ``blur`` anonymises the faces in the returned picture."""
        with self.lock:
            pipeline = self._pipeline(blur)
            image = decode_upload(name, fileobj.read(), self.settings.max_image_pixels)
            frame = Frame(0, 0.0, image, name)
            pipeline.tracker.reset(restart_ids=True)  # each upload is its own picture: ids from 1
            faces = pipeline.process(frame)
            data_url = jpeg_data_url(pipeline.annotate(frame, faces))
            height, width = image.shape[:2]
            del frame, image  # the decoded image goes before the next upload is decoded
        record = [face_json(f) for f in faces]
        return {"kind": "image", "name": name, "width": width, "height": height, "faces": record,
                "image": data_url, "message": None if faces else "No faces found in this image."}

    def close(self) -> None:
        with self.lock:
            for pipeline in self.pipelines.values():
                pipeline.close()


