"""VGG16 gender model: ``keras.applications.VGG16(include_top=False)`` plus a small head.

Input: BGR float pixels in 0..255 (exactly what ``realtime.crop`` produces, cast to float);
ImageNet (caffe-style) mean subtraction happens inside the model, so the int8 model's input
quantisation maps uint8 pixels losslessly. Output: one sigmoid unit, ``p_female``.
The network is fully convolutional under global pooling, so one model trains at any size.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
from keras import layers

from realtime.errors import UserError

log = logging.getLogger(__name__)

IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)


def build_model(weights: str = "none", input_size: int | None = None, head_units: int = 256,
                dropout: float = 0.5) -> keras.Model:
    """``weights``: ``imagenet`` (needs a download), ``none`` (from scratch) or a file path.

    A path may be VGG16 base weights (``*.h5``/``*.weights.h5`` of ``VGG16(include_top=False)``)
    or a whole model of ours (``.keras``).
    """
    if weights not in ("imagenet", "none") and Path(weights).suffix in (".keras", ".npz"):
        if not Path(weights).is_file():
            raise UserError(f"weights file not found: {weights}")
        if Path(weights).suffix == ".npz":
            model = build_model("none", input_size, head_units, dropout)
            load_snapshot(model, Path(weights))
            return model
        return keras.models.load_model(weights)
    shape = (input_size, input_size, 3)
    inputs = keras.Input(shape=shape, name="bgr_0_255")
    x = layers.Normalization(mean=list(IMAGENET_MEAN_BGR), variance=[1.0, 1.0, 1.0],
                             name="imagenet_mean")(inputs)
    base_weights = None
    if weights == "imagenet":
        base_weights = "imagenet"
    base = _vgg16(base_weights, shape)
    if weights not in ("imagenet", "none"):
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"weights file not found: {path}")
        base.load_weights(str(path))
        log.info("loaded VGG16 base weights from %s", path)
    x = base(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(head_units, activation="relu", name="head_dense")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_female")(x)
    return keras.Model(inputs, outputs, name="gender_vgg16")


def _vgg16(weights: str | None, shape: tuple) -> keras.Model:
    try:
        return keras.applications.VGG16(include_top=False, weights=weights, input_shape=shape)
    except Exception as exc:
        if weights == "imagenet":
            raise UserError(
                f"cannot get ImageNet weights ({exc.__class__.__name__}); "
                "pass --weights none or --weights PATH to a local file"
            ) from exc
        raise


def save_snapshot(model: keras.Model, path: Path) -> None:
    """All weights as float16 in one ``.npz`` (~30 MB): small enough to commit so that a run can
    resume on a new machine (``--weights PATH.npz --frozen-epochs 0``)."""
    tmp = path.with_name(path.stem + ".partial.npz")
    np.savez_compressed(tmp, *[w.astype(np.float16) for w in model.get_weights()])
    tmp.replace(path)


def load_snapshot(model: keras.Model, path: Path) -> None:
    with np.load(path) as data:
        weights = [data[f"arr_{i}"].astype(np.float32) for i in range(len(data.files))]
    try:
        model.set_weights(weights)
    except ValueError as exc:
        raise UserError(f"{path} does not fit this model: {exc}") from exc


def base_model(model: keras.Model) -> keras.Model:
    return model.get_layer("vgg16")


def resized(model: keras.Model, size: int) -> keras.Model:
    """The same weights in a model with a fixed ``size`` x ``size`` input (for export)."""
    new = build_model("none", size, head_units=model.get_layer("head_dense").units)
    new.set_weights(model.get_weights())
    return new
