"""realtime.classifier.GenderClassifier: everything read from the model and its metadata."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures import face_photo, write_metadata

from realtime.classifier import GenderClassifier, ModelInfo
from realtime.errors import ModelError
from realtime.litert import load_interpreter


def make_int8_model(path: Path, size: int, pixel_max: float, seed: int = 0) -> Path:
    """A small int8 conv net whose input quantisation depends on ``pixel_max`` (calibration range)."""
    pytest.importorskip("tensorflow", reason="building an int8 test model needs TensorFlow")
    import keras

    from training.export import int8_tflite

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1.0 / pixel_max)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    rep = rng.uniform(0, pixel_max, (16, size, size, 3)).astype(np.float32)
    path.write_bytes(int8_tflite(model, [r[None] for r in rep]))
    write_metadata(path, size)
    np.save(path.with_suffix(".rep.npy"), rep)
    model.save(path.with_suffix(".float.keras"))
    return path


@pytest.fixture(scope="module")
def int8_models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("int8")
    return [make_int8_model(root / "a.tflite", 24, 255.0, 0), make_int8_model(root / "b.tflite", 40, 100.0, 1)]


def test_quantisation_and_size_come_from_the_model(int8_models: list[Path]) -> None:
    seen = set()
    for path in int8_models:
        clf = GenderClassifier(path, num_threads=1)
        detail = load_interpreter(path).get_input_details()[0]
        assert clf.input_size == int(detail["shape"][1])
        assert clf.input_dtype == np.int8
        scale, zero = detail["quantization"]
        assert clf.input_quant == (pytest.approx(scale), zero)
        seen.add((clf.input_size, round(clf.input_quant[0], 6)))
    assert len(seen) == 2  # two models, two sizes and two input scales: nothing hard-coded


def test_int8_predictions_match_the_float_model(int8_models: list[Path]) -> None:
    import keras

    path = int8_models[0]
    float_model = keras.models.load_model(path.with_suffix(".float.keras"))
    rep = np.load(path.with_suffix(".rep.npy"))
    crops = np.clip(rep, 0, 255).astype(np.uint8)
    clf = GenderClassifier(path, num_threads=1)
    p_int8 = clf.predict_crops(crops)
    p_float = float_model.predict(crops.astype(np.float32), verbose=0).reshape(-1)
    assert p_int8.shape == (len(crops),)
    assert np.abs(p_int8 - p_float).max() < 0.03


def test_batch_equals_one_by_one(int8_models: list[Path]) -> None:
    clf = GenderClassifier(int8_models[1], num_threads=1, max_batch=4)
    crops = np.random.default_rng(3).integers(0, 255, (7, 40, 40, 3), dtype=np.uint8)
    together = clf.predict_crops(crops)
    single = np.concatenate([clf.predict_crops(crops[i : i + 1]) for i in range(len(crops))])
    np.testing.assert_allclose(together, single, atol=1e-6)
    assert clf.predict_crops(crops[:0]).shape == (0,)


def test_classify_crops_with_metadata_margin(colour_model: Path) -> None:
    clf = GenderClassifier(colour_model, num_threads=1)
    photo = face_photo()
    preds = clf.classify(photo, [(171, 146, 194, 194)])
    assert len(preds) == 1 and preds[0].label == "female" and preds[0].p_female > 0.9
    gray = np.repeat(photo.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    (pred,) = clf.classify(gray, [(171, 146, 194, 194)])
    assert pred.label == "male" and pred.confidence > 0.9


def test_labels_threshold_and_uncertain_band(colour_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.tflite"
    shutil.copy(colour_model, model)
    write_metadata(model, 32, threshold=0.3, uncertain_band=[0.25, 0.35])
    clf = GenderClassifier(model)
    assert clf.label_for(0.2) == "male"
    assert clf.label_for(0.3) == "uncertain"
    assert clf.label_for(0.36) == "female"


def test_missing_and_mismatched_metadata(colour_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.tflite"
    shutil.copy(colour_model, model)
    with pytest.raises(ModelError, match="metadata not found"):
        GenderClassifier(model)
    write_metadata(model, 64)  # the model is 32 px
    with pytest.raises(ModelError, match="metadata says 64"):
        GenderClassifier(model)
    model.with_suffix(".json").write_text("{not json")
    with pytest.raises(ModelError, match="bad model metadata"):
        GenderClassifier(model)


def test_missing_corrupt_and_wrong_shape_models(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        GenderClassifier(tmp_path / "none.tflite", info=ModelInfo(32))
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        GenderClassifier(empty, info=ModelInfo(32))
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00not a flatbuffer" * 100)
    with pytest.raises(ModelError, match="cannot load model"):
        GenderClassifier(junk, info=ModelInfo(32))
    # A real TFLite model of the wrong kind: the face landmark model (192 px, two outputs).
    landmark = Path(__file__).resolve().parent.parent / "models" / "face_landmark.tflite"
    with pytest.raises(ModelError, match="expected 1 input and 1 output"):
        GenderClassifier(landmark, info=ModelInfo(192))


def test_metadata_fields_are_read(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"input_size": 96, "colour_order": "rgb", "crop_margin": 0.2,
                                "labels": {"positive": "female", "negative": "male"},
                                "threshold": 0.42, "uncertain_band": [0.35, 0.5]}))
    info = ModelInfo.from_json(path)
    assert (info.input_size, info.colour_order, info.crop_margin) == (96, "RGB", 0.2)
    assert info.threshold == 0.42 and info.uncertain_band == (0.35, 0.5)
