"""realtime.classifier.GenderClassifier: everything read from the model and its metadata."""

from __future__ import annotations

import json
import re
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
    with pytest.raises(ModelError, match="outputs but its metadata names none"):
        GenderClassifier(landmark, info=ModelInfo(192))


def test_metadata_fields_are_read(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"input_size": 96, "colour_order": "rgb", "crop_margin": 0.2,
                                "labels": {"positive": "female", "negative": "male"},
                                "threshold": 0.42, "uncertain_band": [0.35, 0.5]}))
    info = ModelInfo.from_json(path)
    assert (info.input_size, info.colour_order, info.crop_margin) == (96, "RGB", 0.2)
    assert info.threshold == 0.42 and info.uncertain_band == (0.35, 0.5)


# -- named outputs: the age head, flip averaging, calibration ---------------------------------------
@pytest.fixture(scope="module")
def age_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow", reason="building the tiny test model needs TensorFlow")
    from fixtures import make_age_model

    return make_age_model(tmp_path_factory.mktemp("age_model") / "age.tflite")


def _halves(left: int, right: int, colour: bool = True) -> np.ndarray:
    crop = np.zeros((1, 32, 32, 3), np.uint8)
    crop[0, :, :16, 0], crop[0, :, 16:, 0] = left, right
    if colour:
        crop[0, :, :, 1] = 0
    return crop


def test_two_named_outputs(age_model: Path) -> None:
    clf = GenderClassifier(age_model)
    assert clf.has_age and set(clf.output_names) == {"p_female", "apparent_age"}
    values = clf.predict(_halves(255, 0))
    assert set(values) == {"p_female", "apparent_age"}
    assert values["apparent_age"][0] == pytest.approx(80.0, abs=0.5)
    assert values["p_female"][0] > 0.9  # strongly coloured


def test_flip_average_is_the_mean_of_the_crop_and_its_mirror(age_model: Path) -> None:
    clf = GenderClassifier(age_model)
    crop = _halves(255, 51)
    plain = clf.predict(crop, flip_average=False)["apparent_age"][0]
    mirrored = clf.predict(crop[:, :, ::-1].copy(), flip_average=False)["apparent_age"][0]
    both = clf.predict(crop, flip_average=True)["apparent_age"][0]
    assert plain == pytest.approx(80.0, abs=0.5) and mirrored == pytest.approx(16.0, abs=0.5)
    assert both == pytest.approx((plain + mirrored) / 2, abs=1e-4)


def test_flip_band_mirrors_only_the_crops_near_the_threshold(age_model: Path) -> None:
    from dataclasses import replace

    base = GenderClassifier(age_model)
    grey = np.full((1, 32, 32, 3), 50, np.uint8)
    grey[0, :, :16] = 200  # grey: p_female 0.05; its mirror has another age
    crops = np.concatenate([_halves(255, 51), grey])
    plain = base.predict(crops, flip_average=False)
    both = base.predict(crops, flip_average=True)
    p0 = float(plain["p_female"][0])
    # a band around the first crop's plain p: it is averaged with its mirror, the second is not
    banded = GenderClassifier(age_model, info=replace(base.info, flip_average=True, flip_band=(p0 - 1e-3, p0 + 1e-3)))
    values = banded.predict(crops)
    assert abs(float(plain["p_female"][1]) - p0) > 1e-3  # the second crop lies outside the band
    assert values["apparent_age"][0] == pytest.approx(both["apparent_age"][0], abs=1e-4)
    assert values["apparent_age"][1] == pytest.approx(plain["apparent_age"][1], abs=1e-4)
    assert abs(both["apparent_age"][1] - plain["apparent_age"][1]) > 10  # so mirroring it would show
    # an empty band mirrors nothing; an explicit flip_average=True mirrors everything
    empty = GenderClassifier(age_model, info=replace(base.info, flip_average=True, flip_band=(0.0, 0.0)))
    np.testing.assert_allclose(empty.predict(crops)["apparent_age"], plain["apparent_age"], atol=1e-4)
    np.testing.assert_allclose(empty.predict(crops, flip_average=True)["apparent_age"], both["apparent_age"],
                               atol=1e-4)


def test_child_gate_and_labels(age_model: Path) -> None:
    clf = GenderClassifier(age_model)
    young = _halves(20, 20)  # age 6.3
    old = _halves(200, 200)  # age 62.7
    (p_young,) = clf.classify(np.zeros((64, 64, 3), np.uint8), [(0, 0, 64, 64)])
    assert p_young.apparent_age is not None
    assert clf.decide(0.95, 6.3) == ("uncertain", "child")
    assert clf.decide(0.95, 30.0) == ("female", None)
    assert clf.decide(0.02, None) == ("male", None)
    ages = clf.predict(np.concatenate([young, old]))["apparent_age"]
    assert ages[0] < 13 < ages[1]


def test_model_without_age_head_has_no_age(colour_model: Path) -> None:
    clf = GenderClassifier(colour_model)
    assert not clf.has_age and clf.output_names == ("p_female",)
    (pred,) = clf.classify(np.zeros((64, 64, 3), np.uint8), [(0, 0, 64, 64)])
    assert pred.apparent_age is None and pred.reason is None


def test_temperature_calibration(colour_model: Path, tmp_path: Path) -> None:
    from realtime.classifier import calibrate

    assert calibrate(np.array([0.5]), 3.0)[0] == pytest.approx(0.5)
    assert calibrate(np.array([0.9]), 2.0)[0] == pytest.approx(1 / (1 + 9 ** -0.5), abs=1e-5)
    raw = GenderClassifier(colour_model).predict_crops(_halves(255, 255))[0]
    shutil.copy(colour_model, tmp_path / "hot.tflite")
    write_metadata(tmp_path / "hot.tflite", 32, calibration={"temperature": 2.0})
    hot = GenderClassifier(tmp_path / "hot.tflite").predict_crops(_halves(255, 255))[0]
    assert hot == pytest.approx(float(calibrate(np.array([raw]), 2.0)[0]), abs=1e-5)
    assert abs(hot - 0.5) < abs(raw - 0.5)


@pytest.mark.parametrize(("override", "needle"), [
    ({"outputs": {"apparent_age": "age"}}, "lack 'p_female'"),
    ({"outputs": {"p_female": "p_female", "apparent_age": "nope"}}, "lacks"),
    ({"threshold": 1.5}, "must lie in 0..1"),
    ({"uncertain_band": [0.7, 0.3]}, "must lie in 0..1"),
    ({"labels": []}, "bad model metadata"),
    ({"crop_margin": "wide"}, "bad model metadata"),
    ({"calibration": {"temperature": 0}}, "temperature"),
    ({"child_age": -4}, "child_age"),
    ({"flip_band": [0.6, 0.2]}, "flip_band"),
    ({"flip_band": "wide"}, "bad model metadata"),
])
def test_metadata_with_wrong_types_or_values_is_one_clear_error(age_model: Path, tmp_path: Path,
                                                                 override: dict, needle: str) -> None:
    model = tmp_path / "m.tflite"
    shutil.copy(age_model, model)
    write_metadata(model, 32, **{"outputs": {"p_female": "p_female", "apparent_age": "age"}, **override})
    with pytest.raises(ModelError, match=re.escape(needle)):
        GenderClassifier(model)
