"""VGG16 gender model: ``keras.applications.VGG16(include_top=False)`` plus a small head.

Input: BGR float pixels in 0..255 (exactly what ``realtime.crop`` produces, cast to float);
ImageNet (caffe-style) mean subtraction happens inside the model, so the int8 model's input
quantisation maps uint8 pixels losslessly. Outputs: ``p_female`` (one sigmoid unit) and, with
the age head, ``age`` (apparent age in years, a linear unit on a small branch of the same pooled
features). The network is fully convolutional
under global pooling, so one model trains at any size.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
from keras import layers

from realtime.errors import UserError
from realtime.face import APPARENT_AGE, P_FEMALE

log = logging.getLogger(__name__)

IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
# The age unit's output is ``AGE_OFFSET + AGE_SCALE * dense``: a fresh head starts near the data's
# mean age and moves in steps of a useful size.
AGE_OFFSET, AGE_SCALE = 35.0, 20.0


def load_checkpoint(path: Path | str, advice: str = "") -> keras.Model:
    """``keras.models.load_model`` whose failures (a truncated, empty or foreign file) are one
    :class:`UserError` naming the file and what to do (``advice``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        return keras.models.load_model(path)
    except Exception as exc:  # zipfile, h5py, JSON and Keras' own errors: the file is not a model of ours
        why = str(exc).splitlines()[0][:160] if str(exc) else exc.__class__.__name__
        raise UserError(f"{path} is damaged or not a Keras model ({why})"
                        + (f": {advice}" if advice else "")) from exc


def save_checkpoint(model: keras.Model, path: Path) -> None:
    """Save ``model`` to ``path`` (``.keras``) through a temporary name, so a reader never sees half
    a file."""
    tmp = path.with_name(path.stem + ".partial.keras")
    model.save(tmp)
    tmp.replace(path)


def build_model(weights: str = "none", input_size: int | None = None, head_units: int = 256,
                dropout: float = 0.5, age_head: bool = False, feature_dim: int = 0) -> keras.Model:
    """``weights``: ``imagenet`` (needs a download), ``none`` (from scratch) or a file path.

    A path may be VGG16 base weights (``*.h5``/``*.weights.h5`` of ``VGG16(include_top=False)``),
    a whole model of ours (``.keras``), a float16 snapshot (``.npz``, see :func:`save_snapshot`)
    or an int8 model of ours (``.tflite``, dequantised: see :func:`load_tflite_weights`). Layers
    that a snapshot or a ``.tflite`` lacks (a new age head) keep their fresh initial weights.

    ``feature_dim`` > 0 adds a training-only ``feature`` output: a linear projection of the pooled
    features into a teacher's face-feature space (distillation, see ``training.distill``); export
    drops it (:func:`without_training_heads`).
    """
    if weights not in ("imagenet", "none") and Path(weights).suffix in (".keras", ".npz", ".tflite"):
        if not Path(weights).is_file():
            raise UserError(f"weights file not found: {weights}")
        if Path(weights).suffix == ".keras":
            loaded = load_checkpoint(weights, "give another --weights file")
            if has_age_head(loaded) == age_head and (feature_dim > 0) == has_feature_head(loaded):
                return loaded
            model = build_model("none", input_size, head_units, dropout, age_head, feature_dim)
            copy_weights(loaded, model, Path(weights))
            return model
        model = build_model("none", input_size, head_units, dropout, age_head, feature_dim)
        if Path(weights).suffix == ".npz":
            load_snapshot(model, Path(weights))
        else:
            load_tflite_weights(model, Path(weights))
        return model
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
    pooled = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(head_units, activation="relu", name="head_dense")(pooled)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    gender = layers.Dense(1, activation="sigmoid", name="p_female")(x)
    if not age_head and not feature_dim:
        return keras.Model(inputs, gender, name="gender_vgg16")
    outputs = {"p_female": gender}
    if age_head:
        a = layers.Dense(head_units // 2, activation="relu", name="age_dense")(pooled)
        a = layers.Dropout(dropout / 2, name="age_dropout")(a)
        a = layers.Dense(1, name="age_unit")(a)
        outputs["age"] = layers.Rescaling(AGE_SCALE, offset=AGE_OFFSET, name="age")(a)
    if feature_dim:
        outputs[FEATURE] = layers.Dense(feature_dim, name=FEATURE)(pooled)
    return keras.Model(inputs, outputs, name="gender_age_vgg16" if age_head else "gender_vgg16")


FEATURE = "feature"  # the training-only projection head (distillation of a teacher's face feature)


@keras.saving.register_keras_serializable(package="face_gender")
def soft_binary_accuracy(y_true, y_pred):
    """Accuracy of the side of 0.5 a prediction is on, for hard labels and soft (teacher) targets
    alike (Keras' BinaryAccuracy compares a soft target with 0/1 exactly and so scores 0)."""
    y_true = keras.ops.reshape(y_true, keras.ops.shape(y_pred))
    return keras.ops.mean(keras.ops.equal(y_true > 0.5, y_pred > 0.5), axis=-1)



def has_age_head(model: keras.Model) -> bool:
    return any(layer.name == "age_unit" for layer in model.layers)


def weights_have_age_head(weights: str | Path) -> bool:
    """Whether a start-weights file (``.npz`` snapshot or ``.keras`` model) holds an age head."""
    path = Path(weights)
    try:
        if path.suffix == ".npz":
            with np.load(path) as data:
                return any(k.startswith("age_unit/") for k in data.files)
        if path.suffix == ".keras":
            import zipfile

            with zipfile.ZipFile(path) as zf:
                return b'"age_unit"' in zf.read("config.json")
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{path}: cannot read the start weights ({exc})") from exc
    return False


def has_feature_head(model: keras.Model) -> bool:
    return any(layer.name == FEATURE for layer in model.layers)


def without_training_heads(model: keras.Model) -> keras.Model:
    """The model as it ships: the same weights without the training-only feature head."""
    if not has_feature_head(model):
        return model
    new = build_model("none", model.input_shape[1], head_units=model.get_layer("head_dense").units,
                      age_head=has_age_head(model))
    copy_weights(model, new)
    return new


def copy_weights(src: keras.Model, dst: keras.Model, source: Path | str = "the checkpoint") -> None:
    """Copy every weight layer of ``src`` that ``dst`` has, by layer name."""
    by_layer = {name: dict(enumerate(layer.get_weights())) for name, layer in weight_layers(src).items()}
    _set_named(dst, by_layer, Path(str(source)))


def named_outputs(model: keras.Model) -> dict[str, str] | None:
    """The metadata's ``outputs`` (meaning -> output name) of the model's int8 export: None for a
    gender-only model (its single output is p_female)."""
    return {P_FEMALE: "p_female", APPARENT_AGE: "age"} if has_age_head(model) else None


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


def weight_layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """Layers that hold weights, by name, looking inside the nested VGG16 base."""
    out: dict[str, keras.layers.Layer] = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.update(weight_layers(layer))
        elif layer.weights:
            out[layer.name] = layer
    return out


def save_snapshot(model: keras.Model, path: Path) -> None:
    """All weights as float16 in one ``.npz`` (~30 MB), keyed ``LAYER/INDEX``: small enough to
    commit, so a run can resume on a new machine and users can fine-tune from it
    (``--weights PATH.npz``)."""
    arrays = {f"{name}/{i}": w.astype(np.float16)
              for name, layer in weight_layers(model).items() for i, w in enumerate(layer.get_weights())}
    tmp = path.with_name(path.stem + ".partial.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def load_snapshot(model: keras.Model, path: Path) -> None:
    """Load a :func:`save_snapshot` file by layer name (older positional snapshots by order)."""
    try:
        with np.load(path) as data:
            arrays = {k: data[k].astype(np.float32) for k in data.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a weights snapshot ({exc})") from exc
    if all(k.startswith("arr_") for k in arrays):
        try:
            model.set_weights([arrays[f"arr_{i}"] for i in range(len(arrays))])
        except (ValueError, KeyError) as exc:
            raise UserError(f"{path} does not fit this model: {exc}") from exc
        return
    by_layer: dict[str, dict[int, np.ndarray]] = {}
    for key, value in arrays.items():
        name, _, index = key.rpartition("/")
        by_layer.setdefault(name, {})[int(index)] = value
    _set_named(model, by_layer, path)


def _set_named(model: keras.Model, by_layer: dict[str, dict[int, np.ndarray]], source: Path) -> None:
    layers_ = weight_layers(model)
    loaded, fresh = [], []
    for name, layer in layers_.items():
        given = by_layer.get(name)
        if given is None:
            fresh.append(name)
            continue
        current = layer.get_weights()
        new = [given.get(i, w) for i, w in enumerate(current)]
        for i, (a, b) in enumerate(zip(new, current, strict=True)):
            if a.shape != b.shape:
                raise UserError(f"{source}: {name}/{i} has shape {a.shape}, the model needs {b.shape}")
        layer.set_weights(new)
        loaded.append(name)
    unused = sorted(set(by_layer) - set(layers_))
    if not loaded:
        raise UserError(f"{source} has no weights for this model")
    log.info("weights from %s: %d layers loaded, %d fresh (%s)%s", source, len(loaded), len(fresh),
             ", ".join(fresh) or "none", f", unused: {', '.join(unused)}" if unused else "")


def load_tflite_weights(model: keras.Model, path: Path) -> None:
    """Warm start from an int8 model of ours: dequantise its convolution and dense weights
    (per-channel scales) into the matching Keras layers, matched by layer name."""
    from realtime.litert import load_interpreter

    interpreter = load_interpreter(path)
    kernels: dict[str, np.ndarray] = {}
    biases: dict[str, np.ndarray] = {}
    for d in interpreter.get_tensor_details():
        parts = d["name"].split(";")[0].split("/")
        if len(parts) < 3:
            continue
        layer = parts[-2].rsplit("_", 1)[0]  # "block1_conv1_1" -> "block1_conv1"
        op = parts[-1]
        q = d["quantization_parameters"]
        if not len(q["scales"]) or d["dtype"] not in (np.int8, np.int32):
            continue
        try:
            raw = interpreter.get_tensor(d["index"]).astype(np.float32)
        except ValueError:
            continue
        scales = q["scales"].astype(np.float32)
        if op in ("convolution", "MatMul") and d["dtype"] == np.int8 and raw.ndim in (2, 4):
            w = raw * scales.reshape((-1,) + (1,) * (raw.ndim - 1))
            kernels[layer] = w.transpose(1, 2, 3, 0) if raw.ndim == 4 else w.T
        elif d["dtype"] == np.int32 and raw.ndim == 1:
            biases[layer] = raw * scales
    by_layer = {name: {0: k, 1: biases.get(name, np.zeros(k.shape[-1], np.float32))}
                for name, k in kernels.items()}
    if not by_layer:
        raise UserError(f"{path}: no convolution or dense weights found")
    _set_named(model, by_layer, path)


def base_model(model: keras.Model) -> keras.Model:
    return model.get_layer("vgg16")


def resized(model: keras.Model, size: int) -> keras.Model:
    """The same weights in a model with a fixed ``size`` x ``size`` input (for export)."""
    new = build_model("none", size, head_units=model.get_layer("head_dense").units,
                      age_head=has_age_head(model))
    copy_weights(model, new)
    return new
