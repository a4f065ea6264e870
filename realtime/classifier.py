"""GenderClassifier: the int8 VGG16 face-attribute model through LiteRT.

Everything the runtime needs to feed the model comes from the model and its metadata JSON (same
name, ``.json``): input size, dtype and quantisation from the model's tensors; colour order, crop
margin, labels, decision threshold, uncertain band, calibration and the model's named outputs
from the metadata.

The protocol for a face-attribute model: crops in, named outputs out (:meth:`GenderClassifier.predict`
returns ``{"p_female": ..., "apparent_age": ...}``, one value per crop), and the label of a face
decided from its (smoothed) outputs by :meth:`GenderClassifier.decide`. A model without the age
head (one output) yields only ``p_female``. Adding a head means adding an output to the model and
its metadata (``outputs``) and, if it changes what is shown, to :meth:`decide` and the drawing.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .crop import Box, apply_region, crop_face
from .errors import ModelError
from .face import APPARENT_AGE, CHILD, P_FEMALE, UNCERTAIN, Face
from .litert import load_interpreter

log = logging.getLogger(__name__)

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
    # Named outputs: meaning -> the model's signature output name ({} = the single output is p_female).
    outputs: dict[str, str] | None = None
    child_age: float | None = None  # faces whose apparent age is under this are "uncertain" (child)
    temperature: float = 1.0  # calibration: p = sigmoid(logit(p) / temperature)
    flip_average: bool = False  # average the outputs of each crop and its mirror image
    # With flip averaging: only crops whose plain p_female (before calibration) lies in [low, high)
    # are mirrored; the rest are far enough from the threshold that the mirror cannot change their
    # label. None: every crop is mirrored.
    flip_band: tuple[float, float] | None = None
    raw: dict | None = None

    @classmethod
    def from_json(cls, path: Path) -> ModelInfo:
        if not path.is_file():
            raise ModelError(f"model metadata not found: {path} (it must sit beside the model)")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"bad model metadata {path}: not readable JSON ({exc})") from exc
        try:
            if not isinstance(data, dict):
                raise TypeError("the top level is not an object")
            labels = data.get("labels", {})
            band = data.get("uncertain_band", [0.4, 0.6])
            outputs = data.get("outputs")
            calibration = data.get("calibration") or {}
            child_age = data.get("child_age")
            flip_band = data.get("flip_band")
            info = cls(
                input_size=int(data["input_size"]),
                colour_order=str(data.get("colour_order", "BGR")).upper(),
                crop_margin=float(data.get("crop_margin", 0.1)),
                positive_label=str(labels.get("positive", "female")),
                negative_label=str(labels.get("negative", "male")),
                threshold=float(data.get("threshold", 0.5)),
                uncertain_band=(float(band[0]), float(band[1])),
                face_region=str(data.get("face_region", "full")),
                outputs={str(k): str(v) for k, v in outputs.items()} if outputs else None,
                child_age=None if child_age is None else float(child_age),
                temperature=float(calibration.get("temperature", 1.0)),
                flip_average=bool(data.get("flip_average", False)),
                flip_band=None if flip_band is None else (float(flip_band[0]), float(flip_band[1])),
                raw=data,
            )
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ModelError(f"bad model metadata {path}: {exc.__class__.__name__}: {exc}") from exc
        info.check(path)
        return info

    def check(self, path: Path | str) -> None:
        """Values that parse but make no sense are errors too."""
        problems = []
        if not 8 <= self.input_size <= 1024:
            problems.append(f"input_size {self.input_size} is outside 8..1024")
        if self.colour_order not in ("BGR", "RGB"):
            problems.append(f"colour_order {self.colour_order!r} is not BGR or RGB")
        if not 0.0 <= self.crop_margin <= 2.0:
            problems.append(f"crop_margin {self.crop_margin} is outside 0..2")
        lo, hi = self.uncertain_band
        # The band is half-open [low, high): a high end just above 1 includes p = 1.
        if not (0.0 <= self.threshold <= 1.0 and 0.0 <= lo <= hi <= 1.05):
            problems.append(f"threshold {self.threshold} / uncertain_band {[lo, hi]} must lie in 0..1 (low <= high)")
        if not 0.05 <= self.temperature <= 20.0:
            problems.append(f"calibration temperature {self.temperature} is outside 0.05..20")
        if self.outputs is not None and P_FEMALE not in self.outputs:
            problems.append(f"outputs {sorted(self.outputs)} lack {P_FEMALE!r}")
        if self.flip_band is not None and not 0.0 <= self.flip_band[0] <= self.flip_band[1] <= 1.05:
            problems.append(f"flip_band {list(self.flip_band)} must lie in 0..1 (low <= high)")
        if self.child_age is not None and not 0 < self.child_age < 100:
            problems.append(f"child_age {self.child_age} is outside 0..100")
        if problems:
            raise ModelError(f"bad model metadata {path}: " + "; ".join(problems))


def metadata_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


class GenderClassifier:
    """Classify face crops: ``p_female`` in [0, 1] per face, and ``apparent_age`` (years) when the
    model has the age head."""

    def __init__(self, model_path: str | Path, num_threads: int = 2, max_batch: int = 8,
                 info: ModelInfo | None = None) -> None:
        self.model_path = Path(model_path)
        self._it = load_interpreter(self.model_path, num_threads)
        self._lock = threading.Lock()
        self.info = info or ModelInfo.from_json(metadata_path(self.model_path))
        inp = self._it.get_input_details()
        out = self._output_details()
        if len(inp) != 1:
            raise ModelError(f"{self.model_path}: expected 1 input, got {len(inp)}")
        shape = [int(v) for v in inp[0]["shape"]]
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
            raise ModelError(f"{self.model_path}: expected an N x S x S x 3 image input, got {shape}")
        self.input_size = shape[1]
        if self.input_size != self.info.input_size:
            raise ModelError(f"{self.model_path}: model input is {self.input_size} px but its metadata "
                             f"says {self.info.input_size} px")
        n_out = int(np.prod(out[P_FEMALE]["shape"][1:]))
        if n_out not in (1, 2):
            raise ModelError(f"{self.model_path}: expected 1 (sigmoid) or 2 (softmax) gender outputs, got {n_out}")
        for name, detail in out.items():
            if name != P_FEMALE and int(np.prod(detail["shape"][1:])) != 1:
                raise ModelError(f"{self.model_path}: output {name!r} should hold one value per face")
        self._n_out = n_out
        self._outputs = {name: (d["index"], np.dtype(d["dtype"]), _quant(d)) for name, d in out.items()}
        self.output_names = tuple(out)
        self.input_dtype = np.dtype(inp[0]["dtype"])
        self.input_quant = _quant(inp[0])
        self._in_index = inp[0]["index"]
        self._batch = shape[0]
        self.max_batch = max(1, max_batch)
        self._can_batch = True

    def _output_details(self) -> dict[str, dict]:
        """The model's outputs by meaning (``p_female``, ``apparent_age``), found by the signature
        output names that the metadata lists; a model without ``outputs`` has one output."""
        plain = self._it.get_output_details()
        if not self.info.outputs:
            if len(plain) != 1:
                raise ModelError(f"{self.model_path}: {len(plain)} outputs but its metadata names none "
                                 "(expected 1 output, or `outputs` in the metadata)")
            return {P_FEMALE: plain[0]}
        try:
            by_name = self._it.get_signature_runner().get_output_details()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.model_path}: no signature to find its named outputs ({exc})") from exc
        missing = [v for v in self.info.outputs.values() if v not in by_name]
        if missing:
            raise ModelError(f"{self.model_path}: the metadata names outputs {missing} that the model lacks "
                             f"(it has {sorted(by_name)})")
        return {meaning: by_name[name] for meaning, name in self.info.outputs.items()}

    @property
    def has_age(self) -> bool:
        return APPARENT_AGE in self._outputs

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

    # -- inference ------------------------------------------------------------------------
    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        n = x.shape[0]
        # One interpreter, shared by every thread that holds this classifier (the web app's
        # connections and jobs): resize, set, invoke and read back as one step.
        with self._lock:
            if n != self._batch:
                self._it.resize_tensor_input(self._in_index, [n, self.input_size, self.input_size, 3])
                self._it.allocate_tensors()
                self._batch = n
            self._it.set_tensor(self._in_index, x)
            self._it.invoke()
            return {name: _dequantise(self._it.get_tensor(index), dtype, quant).reshape(n, -1)
                    for name, (index, dtype, quant) in self._outputs.items()}

    def _raw(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """Every output for N crops (batched where the model allows it), before any averaging."""
        x = self._quantise(crops)
        outs: list[dict[str, np.ndarray]] = []
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
        y = {name: np.concatenate([o[name] for o in outs]) for name in self._outputs}
        g = y[P_FEMALE]
        values = {P_FEMALE: g[:, 0] if self._n_out == 1 else _softmax(g)[:, self._female_column()]}
        for name in self._outputs:
            if name != P_FEMALE:
                values[name] = y[name][:, 0]
        return values

    def predict(self, crops: np.ndarray, flip_average: bool | None = None) -> dict[str, np.ndarray]:
        """Named outputs for N crops from :meth:`crops`: ``p_female`` (calibrated) and, with the
        age head, ``apparent_age`` in years. ``flip_average`` (default: the metadata's) averages
        each crop's outputs with its mirror image's; the metadata's ``flip_band`` limits that to the
        crops near the threshold (``flip_average=True`` mirrors every crop)."""
        if len(crops) == 0:
            return {name: np.zeros((0,), np.float32) for name in self._outputs}
        flip = self.info.flip_average if flip_average is None else flip_average
        band = self.info.flip_band if flip_average is None else None
        if flip and band is None:
            n = len(crops)
            both = self._raw(np.concatenate([crops, crops[:, :, ::-1]]))
            values = {k: (v[:n] + v[n:]) / 2.0 for k, v in both.items()}
        else:
            values = self._raw(crops)
            if flip and band is not None:
                near = in_band(values[P_FEMALE], band)
                if near.any():
                    mirrored = self._raw(crops[near][:, :, ::-1])
                    for k, v in values.items():
                        v[near] = (v[near] + mirrored[k]) / 2.0
        p = np.clip(values[P_FEMALE], 0.0, 1.0)
        if self.info.temperature != 1.0:
            p = calibrate(p, self.info.temperature)
        values[P_FEMALE] = p
        return {k: v.astype(np.float32) for k, v in values.items()}

    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        """``p_female`` for N crops from :meth:`crops`."""
        return self.predict(crops)[P_FEMALE]

    def _female_column(self) -> int:
        order = (self.info.raw or {}).get("output_order", [self.info.negative_label, self.info.positive_label])
        return list(order).index(self.info.positive_label)

    def classify(self, frame_bgr: np.ndarray, boxes: Sequence[Box]) -> list[Face]:
        """Crop and classify all faces of one frame together (no tracking: one result each)."""
        values = self.predict(self.crops(frame_bgr, boxes))
        out = []
        for i, box in enumerate(boxes):
            outputs = {name: float(v[i]) for name, v in values.items()}
            label, reason = self.decide(outputs[P_FEMALE], outputs.get(APPARENT_AGE))
            out.append(Face(tuple(box), label, outputs, reason=reason))  # type: ignore[arg-type]
        return out

    def label_for(self, p_female: float) -> str:
        """The gender label alone: the threshold and the uncertain band of the metadata."""
        lo, hi = self.info.uncertain_band
        if lo <= p_female < hi:
            return UNCERTAIN
        return self.info.positive_label if p_female >= self.info.threshold else self.info.negative_label

    def decide(self, p_female: float, apparent_age: float | None = None) -> tuple[str, str | None]:
        """``(label, reason)`` of a face from its (smoothed) outputs: a face that looks younger
        than the metadata's ``child_age`` is ``uncertain`` for the reason ``child``."""
        if apparent_age is not None and self.info.child_age is not None and apparent_age < self.info.child_age:
            return UNCERTAIN, CHILD
        return self.label_for(p_female), None



def in_band(p: np.ndarray, band: tuple[float, float] | Sequence[float]) -> np.ndarray:
    """Which ``p`` lie in the half-open ``[low, high)`` (uncertain band, flip band)."""
    return (p >= band[0]) & (p < band[1])


def calibrate(p: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling of probabilities: ``sigmoid(logit(p) / temperature)``."""
    q = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return (1.0 / (1.0 + np.exp(-np.log(q / (1 - q)) / temperature))).astype(np.float32)


def _dequantise(y: np.ndarray, dtype: np.dtype, quant: tuple[float, int]) -> np.ndarray:
    scale, zero = quant
    y = y.astype(np.float32)
    if dtype in (np.int8, np.uint8) and scale > 0:
        y = (y - zero) * scale
    return y


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

