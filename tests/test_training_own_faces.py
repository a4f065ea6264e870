"""Training on your own faces: the README's five commands on a tiny generated dataset, and the
safety rules (nothing shipped or earlier is overwritten, clear refusals, Ctrl-C keeps progress)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures import REPO_ROOT, FaceDataset, error_lines, make_face_dataset, run_training

pytest.importorskip("tensorflow", reason="training needs TensorFlow")

pytestmark = pytest.mark.slow

FAST = ("--max-steps", "2", "--val-limit", "8", "--batch-size", "4", "--schedule", "32:1")


def models_digest() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((REPO_ROOT / "models").iterdir())
            if p.is_file()}


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def refused(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def flow(face_dataset: FaceDataset, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """README "Train on your own faces", commands 1-5 (with flags that make them quick)."""
    before = models_digest()
    work = tmp_path_factory.mktemp("own")
    test_folder = make_face_dataset(work / "my_test_faces", per_class=4, extras=False, seed=7).root
    cache, run = work / "my_cache", work / "mine"
    ok(run_training("prepare", "--folder", str(face_dataset.root), "--out", str(cache), "--size", "64",
                    "--data-name", "my faces", "--data-licence", "mine, all rights reserved"))
    train = ok(run_training("train", "--data", str(cache), "--run", str(run), "--weights", "shipped", *FAST,
                            "--frozen-epochs", "0"))
    ok(run_training("export", "--checkpoint", str(run / "best.keras"), "--data", str(cache), "--size", "32",
                    "--max-drop", "100", "--rep-samples", "8", "--float16-weights", str(run / "weights_f16.npz")))
    model = run / "model_int8.tflite"
    ok(run_training("evaluate", "--model", str(model), "--data", str(test_folder), "--report",
                    str(run / "eval.json")))
    realtime = ok(subprocess.run([sys.executable, "-m", "realtime", "--model", str(model), "--source",
                                  str(test_folder / "female"), "--output", str(work / "labelled"), "--no-display",
                                  "--no-progress"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300))
    ok(run_training("card", "--model", str(model)))
    return {"before": before, "after": models_digest(), "cache": cache, "run": run, "model": model,
            "work": work, "realtime": realtime, "train": train}


def test_the_five_commands_make_a_model_the_runtime_uses(flow: dict) -> None:
    model, run = flow["model"], flow["run"]
    assert model.is_file() and model.with_suffix(".json").is_file()
    meta = json.loads(model.with_suffix(".json").read_text())
    assert meta["data"]["name"] == "my faces" and meta["data"]["licence"] == "mine, all rights reserved"
    assert "my faces" in meta["training_data"] and "UTKFace" not in meta["training_data"]
    assert json.loads((run / "eval.json").read_text())["n"] > 0
    assert (flow["work"] / "labelled" / "contact_sheet.jpg").is_file()
    card = (run / "model_int8_card.md").read_text()
    assert "my faces" in card and "mine, all rights reserved" in card and "No ages in this data" in card
    assert "UTKFace test split" not in card
    # the training curve travels in the metadata, so the card needs no file of the run
    assert [row["epoch"] for row in meta["training_curve"]] == ["1"]
    assert "## Training curve" in card


def test_export_writes_float16_weights_to_fine_tune_from(flow: dict, tmp_path: Path) -> None:
    import keras

    from training.model import weight_layers

    weights = flow["run"] / "weights_f16.npz"
    with np.load(weights) as data:
        assert data.files and all(data[k].dtype == np.float16 for k in data.files)
    again = tmp_path / "again"
    ok(run_training("train", "--data", str(flow["cache"]), "--run", str(again), "--weights", str(weights), *FAST,
                    "--frozen-epochs", "0", "--lr", "1e-12"))
    best = keras.models.load_model(flow["run"] / "best.keras")
    resumed = keras.models.load_model(again / "last.keras")
    conv = "block1_conv1"  # at a rate of 1e-12 the loaded weights barely move
    np.testing.assert_allclose(weight_layers(resumed)[conv].get_weights()[0],
                               weight_layers(best)[conv].get_weights()[0], atol=2e-3)


def test_the_flow_leaves_the_shipped_models_byte_identical(flow: dict) -> None:
    assert flow["after"] == flow["before"]


def test_train_into_an_existing_run_needs_resume_or_force(flow: dict) -> None:
    proc = run_training("train", "--data", str(flow["cache"]), "--run", str(flow["run"]), *FAST)
    refused(proc, "already holds a training run", "--resume", "--force")
    assert (flow["run"] / "history.csv").is_file()  # untouched


def test_export_and_card_refuse_to_replace_without_force(flow: dict) -> None:
    stamp = flow["model"].stat().st_mtime_ns
    proc = run_training("export", "--checkpoint", str(flow["run"] / "best.keras"), "--data", str(flow["cache"]),
                        "--size", "32", "--rep-samples", "8")
    refused(proc, "already exists", "--force")
    assert flow["model"].stat().st_mtime_ns == stamp
    refused(run_training("card", "--model", str(flow["model"])), "already exists", "--force")


def test_limit_samples_both_classes(face_dataset: FaceDataset, tmp_path: Path) -> None:
    out = tmp_path / "c"
    ok(run_training("prepare", "--folder", str(face_dataset.root), "--out", str(out), "--size", "32",
                    "--limit", "12", "--context", "1.0"))
    genders = [line.split(",")[2] for line in (out / "meta.csv").read_text().splitlines()[1:]]
    assert genders.count("female") >= 4 and genders.count("male") >= 4


def test_split_fractions_seed_and_explicit_test_folder(face_dataset: FaceDataset, tmp_path: Path) -> None:
    held = make_face_dataset(tmp_path / "held", per_class=3, extras=False, seed=3).root
    out = tmp_path / "c"
    ok(run_training("prepare", "--folder", str(face_dataset.root), "--test", str(held), "--out", str(out),
                    "--size", "32", "--val-fraction", "0.3", "--split-seed", "5", "--context", "1.0"))
    rows = [line.split(",") for line in (out / "meta.csv").read_text().splitlines()[1:]]
    test_files = {r[1] for r in rows if r[-1] == "test"}
    assert test_files == {str(p) for p in sorted(held.rglob("*.*"))}
    assert sum(r[-1] == "val" for r in rows) >= 6
    report = json.loads((out / "report.json").read_text())
    assert report["split"]["seed"] == 5 and report["split"]["fractions"] == {"val": 0.3, "test": 0.0}
    refused(run_training("prepare", "--folder", str(face_dataset.root), "--out", str(out)), "--force")
    refused(run_training("prepare", "--folder", str(face_dataset.root), "--out", str(tmp_path / "d"),
                         "--val-fraction", "0.6", "--test-fraction", "0.5"), "leave some faces")


def test_same_seed_same_weights(flow: dict, tmp_path: Path) -> None:
    import keras

    weights = []
    for name in ("a", "b"):
        ok(run_training("train", "--data", str(flow["cache"]), "--run", str(tmp_path / name), *FAST, "--seed", "3"))
        weights.append(keras.models.load_model(tmp_path / name / "last.keras").get_weights())
    assert all(np.array_equal(x, y) for x, y in zip(*weights, strict=True))


def test_ctrl_c_keeps_the_finished_steps_and_resume_goes_on(flow: dict, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from training import train as train_mod
    from training.errors import TrainingInterruptedError

    cfg = train_mod.TrainConfig(data=str(flow["cache"]), run=str(tmp_path / "run"), schedule=[(32, 2)],
                                batch_size=2, max_steps=4, val_limit=4)
    real = train_mod.StepCounter.on_train_batch_end

    def interrupt(self, batch, logs=None):  # Ctrl-C after the third step of the first epoch
        real(self, batch, logs)
        if self.trainer.steps_done == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod.StepCounter, "on_train_batch_end", interrupt)
    with pytest.raises(TrainingInterruptedError, match=r"0 epoch\(s\) and 3 of 4 steps of epoch 1 kept in .*--resume"):
        train_mod.train(cfg)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["partial"] == {"epoch": 0, "steps": 3} and (tmp_path / "run" / "last.keras").is_file()
    monkeypatch.setattr(train_mod.StepCounter, "on_train_batch_end", real)
    steps: list[tuple[int, int]] = []
    real_set_epoch = train_mod.CropSequence.set_epoch

    def record(self, epoch: int, skip: int = 0) -> None:
        steps.append((epoch, skip))
        real_set_epoch(self, epoch, skip)

    monkeypatch.setattr(train_mod.CropSequence, "set_epoch", record)
    train_mod.train(cfg, resume=True)
    assert steps[-2:] == [(0, 3), (1, 0)]  # epoch 1 goes on after step 3, epoch 2 starts at 0
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["epochs_done"] == 2 and "partial" not in state
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert [r.split(",")[header.index("resumed")] for r in rows[1:]] == ["1", "0"]


def test_bundled_mask_templates_and_a_wrong_path(tmp_path: Path) -> None:
    from realtime.errors import UserError
    from training.masks import BUNDLED_TEMPLATES, load_templates, resolve_templates

    templates = load_templates(resolve_templates("bundled"))
    assert len(templates) >= 5 and all(max(t.rgba.shape[:2]) <= 256 for t in templates)
    assert (BUNDLED_TEMPLATES / "LICENSE").read_text().startswith("MIT License")
    assert resolve_templates("none") is None
    with pytest.raises(UserError, match=r"no masks\.cfg"):
        resolve_templates(tmp_path / "missing")


def test_shipped_weights_resolve_to_the_shipped_model() -> None:
    from realtime.paths import GENDER_MODEL
    from training.train import resolve_weights

    assert Path(resolve_weights("shipped")) in (GENDER_MODEL, GENDER_MODEL.parent / "gender_vgg16_float16.npz")
    assert resolve_weights("none") == "none"


def test_fine_tuning_keeps_the_age_head_and_warns_of_a_small_validation_split(flow: dict) -> None:
    """The shipped model's apparent-age head (and so the child gate) survives fine-tuning on a folder
    without ages, trained on the start model's own age outputs; the card says so; a validation split
    too small to choose an epoch is named in one warning."""
    stderr = flow["train"].stderr
    assert "apparent-age head: kept" in stderr and "unused: age_dense" not in stderr
    assert (flow["run"] / "start_ages.npy").is_file()
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: validation has")]
    assert len(warnings) == 1 and "--val-fraction" in warnings[0]
    meta = json.loads(flow["model"].with_suffix(".json").read_text())
    assert meta["child_age"] == 13.0 and "apparent_age" in meta["outputs"]
    from realtime.classifier import GenderClassifier

    assert GenderClassifier(flow["model"]).has_age
    card = (flow["run"] / "model_int8_card.md").read_text()
    assert "keeps the apparent-age head" in card and "adults and teenagers" not in card
    assert "stratified by gender (this data has no ages" in card
