"""Export: full-integer int8 TFLite + metadata JSON, with a float-vs-int8 parity check.

The exporter fixes the input size, quantises with a representative set of training crops, checks
the int8 model against the float model on the test split (fails when accuracy drops by more than
``max_drop`` points), picks the decision threshold on the validation split (equal female and male
recall) and writes the metadata the runtime reads.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from realtime.classifier import GenderClassifier, ModelInfo
from realtime.errors import UserError

from .data import Cache, load_cache
from .masks import load_templates
from .metrics import choose_threshold, group_table, metrics
from .train import eval_arrays

log = logging.getLogger(__name__)

UNCERTAIN_HALF_WIDTH = 0.1


class ParityError(UserError):
    """The int8 model is too far from the float model."""


def int8_tflite(model, representative: Iterable[np.ndarray]) -> bytes:
    """Full-integer int8 TFLite (int8 input and output) of a fixed-shape Keras model.

    ``representative`` yields single float32 inputs (with the batch axis) for calibration.
    Keras 3 models go through a SavedModel: the converter's Keras path cannot read their variables.
    """
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x.astype(np.float32)] for x in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        return converter.convert()


def convert_int8(model, size: int, representative: np.ndarray) -> bytes:
    """The shipped conversion: ``model`` at a fixed ``size`` (int8 input and output)."""
    from .model import resized

    return int8_tflite(resized(model, size), [x[None] for x in representative])


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def predict_int8(path: Path, info: ModelInfo, x: np.ndarray, threads: int) -> np.ndarray:
    clf = GenderClassifier(path, num_threads=threads, info=info)
    out = []
    for i in tqdm(range(0, len(x), 64), desc="int8", unit="batch", leave=False):
        out.append(clf.predict_crops(x[i : i + 64].astype(np.uint8)))
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


def export(checkpoint: Path, data: Path, out: Path, size: int, max_drop: float = 0.5,
           rep_samples: int = 300, mask_templates: Path | None = None, min_age: int = 13,
           threads: int = 2, training_note: str = "", limit: int = 0) -> dict:
    import keras

    if not checkpoint.is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    cache = load_cache(data)
    templates = load_templates(mask_templates) if mask_templates else []
    model = keras.models.load_model(checkpoint)
    region = run_config(checkpoint).get("face_region", "full")
    rng = np.random.default_rng(0)
    train_idx = cache.indices("train")
    rep_idx = rng.choice(train_idx, size=min(rep_samples, len(train_idx)), replace=False)
    rep = eval_arrays(cache, rep_idx, size, masked=False, region=region)
    rep_masked = eval_arrays(cache, rep_idx[: len(rep_idx) // 3], size, masked=True, templates=templates,
                             region=region)
    log.info("converting to int8 at %d px with %d representative crops", size, len(rep) + len(rep_masked))
    tflite = convert_int8(model, size, np.concatenate([rep, rep_masked]))

    labels = cache.labels()
    val_idx = cache.indices("val", min_age=min_age)
    test_idx = cache.indices("test", min_age=min_age)
    child_idx = cache.indices("test", max_age=min_age - 1)
    if limit:
        val_idx, test_idx, child_idx = val_idx[:limit], test_idx[:limit], child_idx[:limit]
    margin = float(json.loads((data / "report.json").read_text()).get("crop_margin", 0.1)) \
        if (data / "report.json").is_file() else 0.1

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_model = Path(tmp) / "model.tflite"
        tmp_model.write_bytes(tflite)
        provisional = ModelInfo(input_size=size, crop_margin=margin, face_region=region)
        # Threshold from the validation split (int8 predictions, plain and masked together).
        xv = eval_arrays(cache, val_idx, size, masked=False, region=region)
        xvm = eval_arrays(cache, val_idx, size, masked=True, templates=templates, region=region)
        pv = predict_int8(tmp_model, provisional, np.concatenate([xv, xvm]), threads)
        threshold = choose_threshold(np.concatenate([labels[val_idx]] * 2), pv)
        band = (round(max(0.0, threshold - UNCERTAIN_HALF_WIDTH), 3),
                round(min(1.0, threshold + UNCERTAIN_HALF_WIDTH), 3))
        # Parity and test metrics.
        report: dict = {"threshold": threshold, "uncertain_band": list(band)}
        y_test = labels[test_idx]
        for tag, masked in (("test", False), ("test_masked", True)):
            xt = eval_arrays(cache, test_idx, size, masked=masked, templates=templates, region=region)
            if not masked:
                xt_plain = xt
            p_float = model.predict(xt, batch_size=64, verbose=0).reshape(-1)
            p_int8 = predict_int8(tmp_model, provisional, xt, threads)
            m_float = metrics(y_test, p_float, threshold)
            m_int8 = metrics(y_test, p_int8, threshold, band)
            m_int8["float_accuracy"] = m_float["accuracy"]
            m_int8["agreement_with_float"] = float(((p_float >= threshold) == (p_int8 >= threshold)).mean())
            report[tag] = m_int8
            report[f"{tag}_by_group"] = group_table([cache.meta[i] for i in test_idx], p_int8, threshold)
            drop = (m_float["accuracy"] - m_int8["accuracy"]) * 100
            log.info("%s: float %.4f, int8 %.4f (drop %.2f points)", tag, m_float["accuracy"],
                     m_int8["accuracy"], drop)
            if not masked and drop > max_drop:
                raise ParityError(f"int8 accuracy drops {drop:.2f} points below float on the test split "
                                  f"(limit {max_drop}); not exported")
        report["test_by_face_px"] = face_size_table(xt_plain, y_test, tmp_model, provisional, threads, threshold)
        if len(child_idx):
            xc = eval_arrays(cache, child_idx, size, masked=False, region=region)
            report[f"test_children_under_{min_age}"] = metrics(
                labels[child_idx], predict_int8(tmp_model, provisional, xc, threads), threshold, band)
        meta = {
            "model": out.name,
            "architecture": "VGG16 (keras.applications, include_top=False) + GAP + Dense(256) + Dense(1, sigmoid)",
            "input_size": size,
            "colour_order": "BGR",
            "input_scaling": "pixels 0..255 as float (int8 input: scale/zero-point in the model); "
                             "ImageNet mean subtraction is inside the model",
            "crop_margin": margin,
            "crop": "realtime.crop.crop_face on the MediaPipe BlazeFace box",
            "face_region": region,
            "output": "p_female (sigmoid)",
            "labels": {"positive": "female", "negative": "male"},
            "threshold": threshold,
            "uncertain_band": list(band),
            "training": training_note,
            "training_data": f"UTKFace (non-commercial research licence), ages >= {min_age} for training",
            "split_sizes": _split_sizes(cache, min_age),
            "metrics": report,
            "training_commit": _git_commit(),
            "exported": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "checkpoint": str(checkpoint),
            "size_bytes": len(tflite),
        }
        tmp_out = out.with_name(out.name + ".partial")
        tmp_out.write_bytes(tflite)
        meta_path = out.with_suffix(".json")
        tmp_meta = meta_path.with_name(meta_path.name + ".partial")
        tmp_meta.write_text(json.dumps(meta, indent=2))
        tmp_out.replace(out)
        tmp_meta.replace(meta_path)
    log.info("wrote %s (%.1f MB) and %s", out, len(tflite) / 1e6, meta_path)
    return meta


FACE_PX = (16, 24, 32, 48)


def face_size_table(x: np.ndarray, y: np.ndarray, model: Path, info: ModelInfo, threads: int,
                    threshold: float) -> list[dict]:
    """Accuracy when the face was only ``px`` pixels wide in the frame (down- then up-sampled)."""
    size = x.shape[1]
    rows = []
    for px in (*FACE_PX, size):
        if px > size:
            continue
        small = np.stack([cv2.resize(cv2.resize(img, (px, px), interpolation=cv2.INTER_AREA), (size, size),
                                     interpolation=cv2.INTER_LINEAR) for img in x.astype(np.uint8)]) \
            if px < size else x
        m = metrics(y, predict_int8(model, info, small, threads), threshold)
        rows.append({"face_px": px, "n": m["n"], "accuracy": m["accuracy"],
                     "balanced_accuracy": m["balanced_accuracy"]})
    return rows


def run_config(checkpoint: Path) -> dict:
    """The training config saved beside a checkpoint (``state.json``), or {}."""
    state = checkpoint.parent / "state.json"
    if state.is_file():
        return json.loads(state.read_text()).get("config", {})
    return {}


def _split_sizes(cache: Cache, min_age: int) -> dict:
    sizes: dict = {}
    for split in ("train", "val", "test"):
        sizes[split] = len(cache.indices(split))
        sizes[f"{split}_age_{min_age}_plus"] = len(cache.indices(split, min_age=min_age))
    return sizes




os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
