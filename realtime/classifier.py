"""GenderClassifier: the int8 VGG16 gender model through LiteRT.

Everything the runtime needs to feed the model comes from the model and its metadata JSON (same
name, ``.json``): input size, dtype and quantisation from the model's tensors; colour order, crop
margin, labels, decision threshold and uncertain band from the metadata.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .crop import Box, apply_region, crop_face
from .errors import ModelError
from .litert import load_interpreter

log = logging.getLogger(__name__)

UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class Prediction:
    p_female: float
    label: str  # "female" | "male" | "uncertain"

    @property
    def confidence(self) -> float:
        """Confidence in the shown label (for ``uncertain``: in the likelier class)."""
        return max(self.p_female, 1.0 - self.p_female)


@dataclass(frozen=True)
class ModelInfo:
    """What the metadata JSON says about the model (see ``training.export``)."""

    input_size: int
    colour_order: str = "BGR"
    crop_margin: float = 0.1
    positive_label: str = "female"
    negative_label: str = "male"
    threshold: float = 0.5
    uncertain_band: tuple[float, float] = (0.4, 0.6)
    face_region: str = "full"
    raw: dict | None = None

    @classmethod
    def from_json(cls, path: Path) -> ModelInfo:
        if not path.is_file():
            raise ModelError(f"model metadata not found: {path} (it must sit beside the model)")
        try:
            data = json.loads(path.read_text())
            labels = data.get("labels", {})
            band = data.get("uncertain_band", [0.4, 0.6])
            return cls(
                input_size=int(data["input_size"]),
                colour_order=str(data.get("colour_order", "BGR")).upper(),
                crop_margin=float(data.get("crop_margin", 0.1)),
                positive_label=str(labels.get("positive", "female")),
                negative_label=str(labels.get("negative", "male")),
                threshold=float(data.get("threshold", 0.5)),
                uncertain_band=(float(band[0]), float(band[1])),
                face_region=str(data.get("face_region", "full")),
                raw=data,
            )
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ModelError(f"bad model metadata {path}: {exc}") from exc


def metadata_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


class GenderClassifier:
    """Classify face crops; ``p_female`` in [0, 1] per face."""

    def __init__(self, model_path: str | Path, num_threads: int = 2, max_batch: int = 8,
                 info: ModelInfo | None = None) -> None:
        self.model_path = Path(model_path)
        self._it = load_interpreter(self.model_path, num_threads)
        self.info = info or ModelInfo.from_json(metadata_path(self.model_path))
        inp = self._it.get_input_details()
        out = self._it.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise ModelError(f"{self.model_path}: expected 1 input and 1 output, got {len(inp)} and {len(out)}")
        shape = [int(v) for v in inp[0]["shape"]]
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
            raise ModelError(f"{self.model_path}: expected an N x S x S x 3 image input, got {shape}")
        self.input_size = shape[1]
        if self.input_size != self.info.input_size:
            raise ModelError(f"{self.model_path}: model input is {self.input_size} px but its metadata "
                             f"says {self.info.input_size} px")
        n_out = int(np.prod(out[0]["shape"][1:]))
        if n_out not in (1, 2):
            raise ModelError(f"{self.model_path}: expected 1 (sigmoid) or 2 (softmax) outputs, got {n_out}")
        self._n_out = n_out
        self.input_dtype = np.dtype(inp[0]["dtype"])
        self.output_dtype = np.dtype(out[0]["dtype"])
        self.input_quant = _quant(inp[0])
        self.output_quant = _quant(out[0])
        self._in_index, self._out_index = inp[0]["index"], out[0]["index"]
        self._batch = shape[0]
        self.max_batch = max(1, max_batch)
        self._can_batch = True

    # -- preprocessing (shared with training through realtime.crop) --------------------------
    def crops(self, frame_bgr: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        """Face crops exactly as the model was trained on them (N x S x S x 3 uint8)."""
        out = np.empty((len(boxes), self.input_size, self.input_size, 3), np.uint8)
        for i, box in enumerate(boxes):
            out[i] = crop_face(frame_bgr, box, self.input_size, self.info.crop_margin)
        out = apply_region(out, self.info.face_region)
        if self.info.colour_order == "RGB":
            out = out[..., ::-1]
        return out

    def _quantise(self, crops: np.ndarray) -> np.ndarray:
        x = crops.astype(np.float32)
        scale, zero = self.input_quant
        if self.input_dtype in (np.int8, np.uint8) and scale > 0:
            info = np.iinfo(self.input_dtype)
            return np.clip(np.round(x / scale + zero), info.min, info.max).astype(self.input_dtype)
        return x.astype(self.input_dtype)

    def _dequantise(self, y: np.ndarray) -> np.ndarray:
        scale, zero = self.output_quant
        y = y.astype(np.float32)
        if self.output_dtype in (np.int8, np.uint8) and scale > 0:
            y = (y - zero) * scale
        return y

    # -- inference ------------------------------------------------------------------------
    def _run(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if n != self._batch:
            self._it.resize_tensor_input(self._in_index, [n, self.input_size, self.input_size, 3])
            self._it.allocate_tensors()
            self._batch = n
        self._it.set_tensor(self._in_index, x)
        self._it.invoke()
        return self._dequantise(self._it.get_tensor(self._out_index)).reshape(n, -1)

    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        """``p_female`` for N crops from :meth:`crops` (batched where the model allows it)."""
        if len(crops) == 0:
            return np.zeros((0,), np.float32)
        x = self._quantise(crops)
        outs = []
        step = self.max_batch if self._can_batch else 1
        i = 0
        while i < len(x):
            chunk = x[i : i + step]
            try:
                outs.append(self._run(chunk))
            except (RuntimeError, ValueError) as exc:
                if len(chunk) == 1:
                    raise ModelError(f"{self.model_path}: inference failed: {exc}") from exc
                log.debug("model does not take batches (%s); classifying one by one", exc)
                self._can_batch, step = False, 1
                continue
            i += len(chunk)
        y = np.concatenate(outs)
        p = y[:, 0] if self._n_out == 1 else _softmax(y)[:, self._female_column()]
        return np.clip(p, 0.0, 1.0).astype(np.float32)

    def _female_column(self) -> int:
        order = (self.info.raw or {}).get("output_order", [self.info.negative_label, self.info.positive_label])
        return list(order).index(self.info.positive_label)

    def classify(self, frame_bgr: np.ndarray, boxes: Sequence[Box]) -> list[Prediction]:
        """Crop and classify all faces of one frame together."""
        probs = self.predict_crops(self.crops(frame_bgr, boxes))
        return [Prediction(float(p), self.label_for(float(p))) for p in probs]

    def label_for(self, p_female: float) -> str:
        lo, hi = self.info.uncertain_band
        if lo <= p_female < hi:
            return UNCERTAIN
        return self.info.positive_label if p_female >= self.info.threshold else self.info.negative_label



def _quant(detail: dict) -> tuple[float, int]:
    q = detail.get("quantization_parameters") or {}
    scales, zeros = q.get("scales"), q.get("zero_points")
    if scales is not None and len(scales) > 0:
        return float(scales[0]), int(zeros[0])
    scale, zero = detail.get("quantization", (0.0, 0))
    return float(scale), int(zero)


def _softmax(y: np.ndarray) -> np.ndarray:
    e = np.exp(y - y.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)

