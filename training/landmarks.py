"""FaceLandmarks: the MediaPipe 468-point face mesh model (``face_landmark.tflite``) via LiteRT.

Used to place synthetic masks. The model wants an RGB face crop of 192 x 192 in [0, 1] with
generous margin; we feed it the ``realtime.crop`` square at ``LANDMARK_MARGIN`` and return the
points in normalised coordinates of that crop.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from realtime.crop import crop_face
from realtime.litert import load_interpreter
from realtime.paths import LANDMARK_MODEL

LANDMARK_MARGIN = 0.5

# Indices into the 468-point mesh that the mask code uses.
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
NOSE_BRIDGE = [168, 6, 197, 195, 5]
CHIN = 152
LEFT_CHEEK, RIGHT_CHEEK = 234, 454
EYES = [33, 133, 159, 145, 263, 362, 386, 374]


class FaceLandmarks:
    def __init__(self, model: str | Path = LANDMARK_MODEL, num_threads: int = 1) -> None:
        self._it = load_interpreter(model, num_threads)
        inp = self._it.get_input_details()[0]
        self._in_index = inp["index"]
        self.size = int(inp["shape"][1])
        outs = self._it.get_output_details()
        self._mesh_index = max(outs, key=lambda d: int(np.prod(d["shape"])))["index"]
        self._flag_index = min(outs, key=lambda d: int(np.prod(d["shape"])))["index"]

    def __call__(self, image_bgr: np.ndarray, box: tuple[float, float, float, float]
                 ) -> tuple[np.ndarray, float]:
        """Landmarks ``(468, 2)`` normalised to the ``LANDMARK_MARGIN`` crop, and a face logit."""
        crop = crop_face(image_bgr, box, self.size, LANDMARK_MARGIN)
        x = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32)[None] / 255.0
        self._it.set_tensor(self._in_index, x)
        self._it.invoke()
        mesh = self._it.get_tensor(self._mesh_index).reshape(-1, 3)[:, :2] / float(self.size)
        flag = float(self._it.get_tensor(self._flag_index).reshape(-1)[0])
        return mesh.astype(np.float32), flag


def rescale_points(points: np.ndarray, from_margin: float, to_margin: float) -> np.ndarray:
    """Map normalised points between two concentric square crops of different margins."""
    return (points - 0.5) * ((1.0 + from_margin) / (1.0 + to_margin)) + 0.5
