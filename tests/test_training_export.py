"""``training.export``: threshold choice, metrics, and the float-vs-int8 parity check.

The parity tests replace the slow parts (loading the Keras model, int8 conversion, int8
inference) with an oracle that knows the synthetic labels (female crops are in colour, male crops
gray), so the check itself is tested with known float and int8 accuracies.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures import error_lines

pytest.importorskip("tensorflow", reason="training.export needs TensorFlow")

import keras

from training import export as export_mod
from training.__main__ import main
from training.export import ParityError, export
from training.metrics import choose_threshold, metrics, paired_gain

METADATA_KEYS = {"input_size", "colour_order", "crop_margin", "labels", "threshold", "uncertain_band",
                 "split_sizes", "metrics", "training_commit"}


# -- threshold and metrics -----------------------------------------------------------------------
def test_choose_threshold_equalises_recalls() -> None:
    # Female scores spread over 0.3..1, male over 0..0.5: equal recall at t with
    # (1 - t) / 0.7 == t / 0.5, i.e. t = 0.4167, where both recalls are 0.833.
    y = np.array([1] * 701 + [0] * 501)
    p = np.concatenate([np.linspace(0.3, 1.0, 701), np.linspace(0.0, 0.5, 501)])
    t = choose_threshold(y, p)
    assert t == pytest.approx(0.4167, abs=0.006)
    m = metrics(y, p, t)
    assert m["recall_female"] == pytest.approx(m["recall_male"], abs=0.01)
    at_half = metrics(y, p, 0.5)
    assert at_half["recall_female"] - at_half["recall_male"] < -0.25  # what the threshold fixes


def test_choose_threshold_stays_at_half_on_a_small_split() -> None:
    # 30 faces a class with female recall a little low at 0.5: equalising would push t far down
    y = np.array([1] * 30 + [0] * 30)
    p = np.concatenate([np.linspace(0.05, 1.0, 30), np.linspace(0.0, 0.45, 30)])
    assert choose_threshold(y, p, min_per_class=1) < 0.4
    assert choose_threshold(y, p) == 0.5


def test_choose_threshold_prefers_accuracy_on_ties() -> None:
    y = np.array([1, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.2, 0.1])  # every t in (0.2, 0.8] separates perfectly
    t = choose_threshold(y, p, min_per_class=1)
    assert 0.2 < t <= 0.8
    assert metrics(y, p, t)["accuracy"] == 1.0


def test_metrics_values() -> None:
    y = np.array([1, 1, 1, 0, 0])
    p = np.array([0.9, 0.55, 0.2, 0.45, 0.1])
    m = metrics(y, p, 0.5, band=(0.4, 0.6))
    assert m["n"] == 5
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["recall_female"] == pytest.approx(2 / 3)
    assert m["recall_male"] == 1.0
    assert m["balanced_accuracy"] == pytest.approx(5 / 6)
    assert m["uncertain"] == pytest.approx(0.4)


def test_paired_gain_separates_a_real_gain_from_noise() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 2000)
    old = [rng.random(2000) < 0.90, rng.random(2000) < 0.85]
    # better on 200 of the faces the old model gets wrong, the same elsewhere
    better = [c.copy() for c in old]
    for c in better:
        c[np.flatnonzero(~c)[:100]] = True
    real = paired_gain(y, better, old, rounds=500)
    assert real["gain"] > 0 and real["ci95"][0] > 0 and real["p_not_better"] == 0.0
    # a model that differs by swapping a few faces right for wrong is noise: the interval holds 0
    swapped = [c.copy() for c in old]
    for c in swapped:
        c[np.flatnonzero(~c)[:5]] = True
        c[np.flatnonzero(c)[:5]] = False
    noise = paired_gain(y, swapped, old, rounds=500)
    assert noise["ci95"][0] < 0 < noise["ci95"][1]
    assert abs(noise["gain"]) < 0.01
    same = paired_gain(y, old, old, rounds=50)
    assert same["gain"] == 0 and same["ci95"] == [0.0, 0.0] and same["p_not_better"] == 1.0


# -- parity check ----------------------------------------------------------------------------------
def oracle(x: np.ndarray) -> np.ndarray:
    """p_female: 1 for coloured crops, 0 for gray ones (the fixture's synthetic labels)."""
    coloured = (np.ptp(np.asarray(x, np.float32), axis=-1) > 2).mean(axis=(1, 2)) > 0.05
    return coloured.astype(np.float32)


class OracleModel:
    """Stands in for the float Keras model (no age head)."""

    layers: tuple = ()

    def predict(self, x: np.ndarray, batch_size: int | None = None, verbose: int = 0) -> np.ndarray:
        return oracle(x)[:, None]


@pytest.fixture
def fake_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A perfect float model, no conversion; returns the checkpoint path. Tests set the int8 side."""
    checkpoint = tmp_path / "model.keras"
    checkpoint.write_bytes(b"stand-in")
    monkeypatch.setattr(keras.models, "load_model", lambda path: OracleModel())
    monkeypatch.setattr(export_mod, "convert_int8", lambda model, size, rep: b"int8 model bytes")
    monkeypatch.setattr(export_mod, "ms_per_face", lambda path, info, threads, crops: 1.0)
    return checkpoint


def int8_predictions(monkeypatch: pytest.MonkeyPatch, broken: bool) -> None:
    def predict(path: Path, info: object, x: np.ndarray, threads: int) -> np.ndarray:
        p = oracle(x)
        return 1.0 - p if broken else p

    monkeypatch.setattr(export_mod, "predict_int8", predict)


def test_parity_error_when_int8_disagrees(fake_models: Path, prepared_cache: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    int8_predictions(monkeypatch, broken=True)
    out = tmp_path / "out" / "m.tflite"
    with pytest.raises(ParityError, match=r"int8 accuracy drops 100\.00 points"):
        export(fake_models, prepared_cache, out, 32)
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_parity_passes_when_int8_agrees(fake_models: Path, prepared_cache: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    int8_predictions(monkeypatch, broken=False)
    out = tmp_path / "out" / "m.tflite"
    meta = export(fake_models, prepared_cache, out, 32, max_drop=0.0)
    assert out.read_bytes() == b"int8 model bytes"
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved == meta and saved.keys() >= METADATA_KEYS
    test = saved["metrics"]["test"]
    assert test["accuracy"] == test["float_accuracy"] == test["agreement_with_float"] == 1.0
    assert saved["input_size"] == 32 and saved["crop_margin"] == pytest.approx(0.1)
    assert not [p for p in out.parent.iterdir() if "partial" in p.name]


def test_parity_failure_is_a_cli_error(fake_models: Path, prepared_cache: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    int8_predictions(monkeypatch, broken=True)
    out = tmp_path / "m.tflite"
    code = main(["export", "--checkpoint", str(fake_models), "--data", str(prepared_cache),
                 "--out", str(out), "--size", "32"])
    assert code == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "int8 accuracy drops" in errors[0]
    assert not out.exists()


def test_missing_checkpoint_is_a_user_error(prepared_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(export_mod.UserError, match="checkpoint not found"):
        export(tmp_path / "absent.keras", prepared_cache, tmp_path / "m.tflite", 32)


# -- calibration, uncertain band, age metrics ------------------------------------------------------
def test_fit_temperature_recovers_a_known_temperature() -> None:
    from realtime.classifier import calibrate
    from training.metrics import fit_temperature, reliability

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2.0, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-logits))).astype(int)  # calibrated by construction
    overconfident = calibrate(1 / (1 + np.exp(-logits)), 1 / 2.5)  # logits x 2.5
    t = fit_temperature(y, overconfident)
    assert t == pytest.approx(2.5, rel=0.08)
    assert reliability(y, calibrate(overconfident, t))[1] < reliability(y, overconfident)[1] / 3


def test_band_for_share_holds_the_share() -> None:
    from training.metrics import band_for_share

    p = np.linspace(0, 1, 1001)
    lo, hi = band_for_share(p, 0.5, 0.1)
    assert ((p >= lo) & (p < hi)).mean() >= 0.1
    assert hi - lo == pytest.approx(0.1, abs=0.011)
    assert band_for_share(p, 0.5, 0.0) == (0.5, 0.5)


def test_age_metrics() -> None:
    from training.metrics import age_metrics

    true = np.array([5, 8, 30, 45, 70], np.float32)
    pred = np.array([7, 15, 28, 10, 72], np.float32)
    m = age_metrics(true, pred, 13)
    assert m["mae"] == pytest.approx((2 + 7 + 2 + 35 + 2) / 5)
    assert m["children"] == 2 and m["children_gated"] == 0.5
    assert m["adults"] == 3 and m["adults_gated"] == pytest.approx(1 / 3)
    bands = {row["age_band"]: row for row in m["mae_by_band"]}
    assert bands["0-12"]["n"] == 2 and bands["0-12"]["mae"] == pytest.approx(4.5)


def test_parity_refusal_explains_itself() -> None:
    with pytest.raises(ParityError) as info:
        export_mod.check_parity(0.95, 0.90, 400, 0.5, np.array([0.49, 0.5, 0.51] * 100))
    text = str(info.value)
    assert "20 of 400 faces" in text and "--max-drop" in text and "3 distinct values" in text
    export_mod.check_parity(1.0, 0.99, 100, 0.5, np.linspace(0, 1, 100))  # one face: noise, accepted


def test_model_card_states_the_flip_band_and_its_cost() -> None:
    from training.card import flip_lines

    base = {"flip_average": True, "val_accuracy_flip_on": 0.9475, "val_accuracy_flip_off": 0.947,
            "ms_per_face_flip_on": 3.5, "ms_per_face_flip_off": 3.0}
    banded = {**base, "flip_band": [0.125, 0.675], "val_mirrored": 0.103, "ms_timed_faces": 200,
              "val_accuracy_flip_every_face": 0.9473, "ms_per_face_flip_every_face": 6.1}
    (line,) = flip_lines(banded)
    assert "[0.125, 0.675)" in line and "10.3 %" in line and "(1.17x)" in line and "6.10 mirroring every face" in line
    (every,) = flip_lines({**banded, "flip_band": None})
    assert "for every face" in every
    (old,) = flip_lines(base)  # metadata written before the flip band: still rendered
    assert "3.50 vs 3.00 ms per face" in old


def test_model_card_lists_a_candidate_that_was_not_shipped() -> None:
    from training.card import trial_sections

    def row(model: str, plain: float, masked: float, ms: float, gain: dict | None = None) -> dict:
        out = {"model": model, "val": {"balanced_accuracy": plain}, "val_masked": {"balanced_accuracy": masked},
               "score": (plain + masked) / 2, "ms_per_face": ms}
        return {**out, "vs_previous": gain} if gain else out

    trial = {"title": "weight averaging", "note": "Within noise: kept the old one.",
             "cpu": {"name": "a CPU", "cores": 2, "flags": ["avx2"]},
             "split": "val, ages >= 13", "n": 2010,
             "models": [row("old.tflite", 0.96, 0.935, 1.2),
                        row("new.tflite", 0.961, 0.935, 1.1, {"gain": 0.0002, "ci95": [-0.0031, 0.0036]})]}
    text = "\n".join(trial_sections([trial]))
    assert "## Tried, not shipped: weight averaging" in text and "Within noise: kept the old one." in text
    assert "on a CPU, 2 cores (avx2)" in text and "2010 faces" in text
    assert "| `old.tflite` | 96.0 % | 93.5 % | 0.9475 | - | 1.20 |" in text
    assert "+0.02 (-0.31 to +0.36) points" in text
    assert trial_sections([]) == []


def test_distillation_ablation_computes_the_ship_decision() -> None:
    """The card's ablation joins each candidate's validation and web-portrait scores by SHA-256 and
    decides from the intervals: a candidate replaces the baseline only when it gains beyond the noise
    on one set without losing beyond the noise on the other, at most 2x its per-face cost."""
    from training.card import beats_baseline, distillation_section, ship_verdict

    def gain(g: float, lo: float, hi: float) -> dict:
        return {"gain": g, "ci95": [lo, hi]}

    def val_row(label: str, sha: str, score: float, ratio: float, g: dict | None) -> dict:
        row = {"model": f"{sha}.tflite", "label": label, "sha256": sha, "input_size": 64, "score": score,
               "ms_per_face": 3.0 * ratio, "ms_vs_first": ratio}
        return {**row, "vs_first": g} if g else row

    def web_row(sha: str, bal: float, g: dict | None) -> dict:
        row = {"sha256": sha, "balanced_accuracy": bal, "gap_female_minus_male": 0.04}
        return {**row, "vs_first": g} if g else row

    cpu = {"name": "a CPU", "cores": 2, "flags": []}
    val = {"cpu": cpu, "split": "val, ages >= 13", "n": 2010,
           "models": [val_row("baseline", "a", 0.947, 1.0, None),
                      val_row("teachers", "b", 0.944, 1.0, gain(-0.0036, -0.0072, 0.0001)),
                      val_row("big input", "c", 0.952, 2.3, gain(0.005, 0.001, 0.009))]}
    web = {"data": "portraits", "rows": [web_row("a", 0.929, None), web_row("b", 0.934, gain(0.004, -0.005, 0.013)),
                                         web_row("c", 0.94, gain(0.011, 0.002, 0.02))]}
    assert not beats_baseline(gain(-0.0036, -0.0072, 0.0001), gain(0.004, -0.005, 0.013))  # noise both ways
    assert beats_baseline(gain(0.004, 0.001, 0.008), gain(-0.002, -0.01, 0.001))  # better on one, not worse
    assert not beats_baseline(gain(0.004, 0.001, 0.008), gain(-0.02, -0.03, -0.01))  # better on one, worse
    assert not beats_baseline(gain(0.004, 0.001, 0.008), None)
    verdict = ship_verdict(val, web)  # "big input" would win, but costs 2.3x
    assert verdict.startswith("**Ship decision: `a.tflite` stays.**") and "teachers, -0.36 (-0.72 to +0.01)" in verdict
    text = "\n".join(distillation_section(val, web, None, None))
    assert "| teachers | 64 | 0.9440 | -0.36 (-0.72 to +0.01) | 93.4 % | +0.40 (-0.50 to +1.30) | +4.0 |" in text
    assert distillation_section(None, web, None, None) == []
    cheap = {**val, "models": [*val["models"][:2], val_row("big input", "c", 0.952, 1.5, gain(0.005, 0.001, 0.009))]}
    assert ship_verdict(cheap, web).startswith("**Ship decision:** big input beats `a.tflite`")
