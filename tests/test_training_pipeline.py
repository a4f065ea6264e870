"""End to end through the CLIs: prepare → train → train --resume → export → evaluate (tiny, 32 px).

VGG16 from scratch for two steps learns nothing; these tests check the files, their contents and
the contracts between the stages, not accuracy.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from fixtures import FaceDataset, error_lines, run_training

pytest.importorskip("tensorflow", reason="training needs TensorFlow")

pytestmark = pytest.mark.slow

TRAIN_ARGS = ("--max-steps", "2", "--val-limit", "8", "--batch-size", "4")
METADATA_KEYS = {"input_size", "colour_order", "crop_margin", "labels", "threshold", "uncertain_band",
                 "split_sizes", "metrics", "training_commit"}
CONTRACT_KEYS = {"n", "no_face", "accuracy", "balanced_accuracy", "recall_female", "recall_male",
                 "uncertain", "ms_per_face"}


def check(proc: object) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"  # type: ignore[attr-defined]
    assert not error_lines(proc.stderr)  # type: ignore[attr-defined]


def history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def state(run: Path) -> dict:
    return json.loads((run / "state.json").read_text())


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pipeline")


@pytest.fixture(scope="module")
def cache(face_dataset: FaceDataset, work: Path) -> Path:
    out = work / "cache"
    check(run_training("prepare", "--folder", str(face_dataset.root), "--out", str(out), "--size", "64"))
    return out


@pytest.fixture(scope="module")
def runs(cache: Path, work: Path) -> dict:
    """A two-epoch schedule in two stages: one epoch (``--stop-after 1``), then ``--resume``;
    snapshots of both."""
    run = work / "run"
    staged = run_training("train", "--data", str(cache), "--run", str(run), "--schedule", "32:2", "--stop-after", "1",
                          *TRAIN_ARGS)
    check(staged)
    first = {"state": state(run), "history": history(run), "mtime": (run / "last.keras").stat().st_mtime_ns,
             "log": staged.stderr}
    resumed = run_training("train", "--data", str(cache), "--run", str(run), "--schedule", "32:2", "--resume",
                           *TRAIN_ARGS)
    check(resumed)
    again = run_training("train", "--data", str(cache), "--run", str(run), "--schedule", "32:2", "--stop-after", "1",
                         "--resume", *TRAIN_ARGS)  # a stage already done: nothing is trained or changed
    check(again)
    assert "2 epochs already done (--stop-after 1): nothing to train" in again.stderr
    return {"run": run, "first": first, "second": {"state": state(run), "history": history(run)},
            "resume_log": resumed.stderr, "resume_stdout": resumed.stdout}


@pytest.fixture(scope="module")
def exported(runs: dict, cache: Path, work: Path) -> Path:
    out = work / "model" / "m.tflite"
    check(run_training("export", "--checkpoint", str(runs["run"] / "last.keras"), "--data", str(cache),
                       "--out", str(out), "--size", "32", "--max-drop", "100", "--rep-samples", "8"))
    return out


def test_prepare_writes_cache(cache: Path, face_dataset: FaceDataset) -> None:
    for name in ("crops.npy", "landmarks.npy", "meta.csv", "report.json"):
        assert (cache / name).is_file(), name
    report = json.loads((cache / "report.json").read_text())
    assert report["faces_found"] == len(face_dataset.faces)
    assert set(report["split_sizes"]) == {"train", "val", "test"}


def test_train_writes_run_files(runs: dict) -> None:
    run = runs["run"]
    for name in ("last.keras", "best.keras", "state.json", "history.csv", "curves.png"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    first = runs["first"]
    assert first["state"]["epochs_done"] == 1
    assert first["state"]["best_epoch"] == 1
    assert first["state"]["config"]["schedule"] == [[32, 2]]
    assert "stopped after epoch 1 of 2 as asked (--stop-after)" in first["log"]
    rows = first["history"]
    assert [(r["epoch"], r["size"]) for r in rows] == [("1", "32")]
    for key in ("loss", "acc", "val_acc", "val_masked_acc"):
        assert rows[0][key] not in ("", None), key


def test_resume_continues_from_saved_epoch(runs: dict) -> None:
    first, second = runs["first"], runs["second"]
    assert second["state"]["epochs_done"] == first["state"]["epochs_done"] + 1 == 2
    # History gains a row for epoch 2 and keeps epoch 1 as it was (no restart).
    assert [r["epoch"] for r in second["history"]] == ["1", "2"]
    assert second["history"][0] == first["history"][0]
    assert "resumed" in runs["resume_log"]
    # One progress bar per epoch, named after the run's epochs (Keras' own would say "Epoch 2/2" for
    # every fit of one epoch, e.g. "Epoch 6/6" on epoch 6 of 9); Keras prints nothing itself.
    assert "epoch 2/2 (32 px)" in runs["resume_log"]
    assert "Epoch " not in runs["resume_stdout"] + runs["resume_log"]
    # TensorFlow's native start-up notes are filtered out of the log (Python's lines are not).
    assert "absl::InitializeLog" not in runs["resume_log"] and "oneDNN" not in runs["resume_log"]
    assert (runs["run"] / "last.keras").stat().st_mtime_ns > first["mtime"]


def test_export_writes_model_and_metadata(exported: Path) -> None:
    assert exported.stat().st_size > 1_000_000  # VGG16 in int8 is ~15 MB
    meta = json.loads(exported.with_suffix(".json").read_text())
    assert meta.keys() >= METADATA_KEYS
    assert meta["input_size"] == 32 and meta["colour_order"] == "BGR"
    assert meta["labels"] == {"positive": "female", "negative": "male"}
    lo, hi = meta["uncertain_band"]
    assert lo <= meta["threshold"] <= hi
    assert {"train", "val", "test"} <= meta["split_sizes"].keys()
    assert {"test", "test_masked"} <= meta["metrics"].keys()


def test_exported_model_loads_in_the_runtime(exported: Path) -> None:
    import numpy as np

    from realtime.classifier import GenderClassifier

    clf = GenderClassifier(exported)
    assert clf.input_size == 32 and clf.input_dtype == np.int8
    p = clf.predict_crops(np.zeros((3, 32, 32, 3), np.uint8))
    assert p.shape == (3,) and np.all((p >= 0) & (p <= 1))


def test_evaluate_cli_on_exported_model(exported: Path, face_dataset: FaceDataset, work: Path) -> None:
    report_path = work / "eval" / "report.json"
    check(run_training("evaluate", "--model", str(exported), "--data", str(face_dataset.root),
                       "--report", str(report_path)))
    report = json.loads(report_path.read_text())
    assert report.keys() >= CONTRACT_KEYS
    assert report["n"] == face_dataset.readable
    assert report["no_face"] == 1 and report["unreadable"] == 2
    assert 0.0 <= report["accuracy"] <= 1.0 and report["ms_per_face"] > 0
    for suffix in ("_confusion.png", "_reliability.png"):
        assert (report_path.parent / f"report{suffix}").is_file()


def test_train_rejects_bad_schedule(cache: Path, work: Path) -> None:
    proc = run_training("train", "--data", str(cache), "--run", str(work / "bad"), "--schedule", "16:1")
    assert proc.returncode == 2
    assert len(error_lines(proc.stderr)) == 1 and "sizes >= 32" in proc.stderr


# -- the age head, end to end -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def age_export(face_dataset: FaceDataset, work: Path) -> Path:
    """UTKFace-style layout (labels.csv with ages) → prepare → train --age-head → export."""
    import shutil

    utk = work / "utk"
    (utk / "images").mkdir(parents=True)
    rows = ["file,age,gender,race"]
    for k, path in enumerate(face_dataset.faces):
        _, code, _, _ = path.stem.split("_")
        shutil.copy(path, utk / "images" / path.name)
        # One age band and one race, so the split's strata are big enough for val and test.
        rows.append(f"{path.name},{20 + k % 10},{'female' if code == '1' else 'male'},White")
    (utk / "labels.csv").write_text("\n".join(rows) + "\n")
    cache = work / "utk_cache"
    check(run_training("prepare", "--utkface", str(utk), "--out", str(cache), "--size", "64"))
    run = work / "age_run"
    check(run_training("train", "--data", str(cache), "--run", str(run), "--schedule", "32:1", "--age-head",
                       "--lr-schedule", "plateau", "--patience", "3", *TRAIN_ARGS))
    out = work / "age_model" / "m.tflite"
    check(run_training("export", "--checkpoint", str(run / "last.keras"), "--data", str(cache), "--out", str(out),
                       "--size", "32", "--max-drop", "100", "--rep-samples", "8"))
    return out


def test_age_head_trains_exports_and_runs(age_export: Path) -> None:
    import numpy as np

    from realtime.classifier import GenderClassifier

    run = age_export.parent.parent / "age_run"
    rows = history(run)
    assert rows[0]["val_age_mae"] not in ("", None)
    meta = json.loads(age_export.with_suffix(".json").read_text())
    assert meta["outputs"] == {"p_female": "p_female", "apparent_age": "age"}
    assert meta["child_age"] == 13
    choices = meta["metrics"]["validation_choices"]
    assert {"flip_average", "temperature", "val_ece_before", "val_ece_after", "ms_per_face_flip_on",
            "ms_per_face_flip_off", "ms_per_face_flip_every_face", "flip_band", "val_mirrored"} <= choices.keys()
    # the flip band is the narrowest around the threshold holding the default 10 % of validation faces
    assert choices["flip_share"] == 0.1 and choices["val_mirrored"] >= 0.1
    lo, hi = choices["flip_band"]
    assert 0 <= lo <= hi <= 1
    assert meta.get("flip_band") == (choices["flip_band"] if choices["flip_average"] else None)
    assert meta["calibration"]["temperature"] == choices["temperature"] > 0
    assert meta["metrics"]["test_age"]["mae"] is not None
    assert [r["framing"] for r in meta["metrics"]["test_framing"]] == ["runtime crop", "20 % looser", "15 % tighter"]
    clf = GenderClassifier(age_export)
    assert clf.has_age
    values = clf.predict(np.zeros((2, 32, 32, 3), np.uint8))
    assert values["apparent_age"].shape == (2,) and np.isfinite(values["apparent_age"]).all()


def script(name: str) -> object:
    """A script of scripts/ as a module (its ``main`` runs in this process)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, mod)
    spec.loader.exec_module(mod)
    return mod


def test_average_weights_and_the_size_sweep(runs: dict, cache: Path, work: Path) -> None:
    """scripts/average_weights.py: shares 1 and 0 give the first model's weights, equal shares the mean,
    and it refuses to overwrite; scripts/size_tradeoff.py scores a checkpoint and times a size it rules
    out by cost alone."""
    import numpy as np

    from training.model import load_checkpoint, weight_layers

    last, best = runs["run"] / "last.keras", runs["run"] / "best.keras"
    avg = script("average_weights")
    out = work / "avg" / "mean.keras"

    def weights(path: Path) -> list:
        return [w for layer in weight_layers(load_checkpoint(path)).values() for w in layer.get_weights()]

    assert avg.main(["--model", str(last), "--model", str(best), "--out", str(out)]) == 0
    mean = [(x + y) / 2 for x, y in zip(weights(last), weights(best), strict=True)]
    assert all(np.allclose(x, y, atol=1e-6) for x, y in zip(weights(out), mean, strict=True))
    assert avg.main(["--model", str(last), "--model", str(best), "--out", str(out)]) == 2  # exists: --force
    assert avg.main(["--model", str(last), "--model", str(best), "--weights", "1,0", "--out", str(out),
                     "--force"]) == 0
    assert all(np.allclose(x, y) for x, y in zip(weights(out), weights(last), strict=True))
    assert avg.main(["--model", str(last), "--out", str(work / "avg" / "one.keras")]) == 2
    sizes = script("size_tradeoff")
    js = work / "avg" / "sizes.json"
    assert sizes.main(["--data", str(cache), "--model", f"32={last}", "--cost-only", f"48={last}", "--rep-samples",
                       "4", "--threads", "1", "--json", str(js)]) == 0
    rows = json.loads(js.read_text())["rows"]
    assert [(r["size"], r["cost_only"]) for r in rows] == [(32, False), (48, True)]
    assert 0.0 <= rows[0]["val_accuracy"] <= 1.0 and "val_accuracy" not in rows[1]
    assert rows[0]["cost_ratio"] == 1.0 and rows[1]["cost_ratio"] > 0


def test_compare_on_val_scores_and_times_each_model(exported: Path, age_export: Path, cache: Path,
                                                   work: Path) -> None:
    """scripts/compare_on_val.py: validation scores, SHA-256 and per-face time of each model, relative
    to the first, and the winner (what the ship decision is made from)."""
    mod = script("compare_on_val")
    out = work / "compare" / "decision.json"
    out.parent.mkdir()
    assert mod.main(["--data", str(cache), "--model", str(exported), "--model", str(age_export),
                     "--mask-templates", "none", "--timed-faces", "4", "--timing-rounds", "3",
                     "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    first, second = result["models"]
    assert [first["model"], second["model"]] == [str(exported), str(age_export)]
    assert first["ms_vs_first"] == 1.0 and first["ms_per_face"] > 0 and second["ms_per_face"] > 0
    assert second["ms_vs_first"] == pytest.approx(second["ms_per_face"] / first["ms_per_face"], rel=0.01)
    assert len(first["sha256"]) == 64 and first["sha256"] != second["sha256"]
    assert result["best"] == max(result["models"], key=lambda r: r["score"])["model"]
    assert 0.0 <= first["val"]["accuracy"] <= 1.0 and 0.0 <= second["val_masked"]["balanced_accuracy"] <= 1.0
    # timed in turns: each model's figure is the median of its rounds
    assert len(second["ms_per_face_rounds"]) == 3
    assert second["ms_per_face"] == pytest.approx(sorted(second["ms_per_face_rounds"])[1], abs=1e-3)
    # the second is compared with the first on the same faces: the gain is the score difference
    gain = second["vs_previous"]
    assert "vs_previous" not in first and gain["model"] == first["model"]
    assert gain["gain"] == pytest.approx(second["score"] - first["score"], abs=2e-4)
    assert gain["ci95"][0] <= gain["ci95"][1]
    # an ablation: every model against the first (a baseline), each with a label saying what it is
    out = work / "compare" / "ablation.json"
    assert mod.main(["--data", str(cache), "--model", str(exported), "--model", str(age_export), "--model",
                     str(exported), "--label", "base", "--label", "age head", "--label", "base again", "--vs", "first",
                     "--mask-templates", "none", "--timed-faces", "2", "--timing-rounds", "1",
                     "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["models"]
    assert [r["label"] for r in rows] == ["base", "age head", "base again"]
    assert rows[2]["vs_first"]["model"] == str(exported) and rows[2]["vs_first"]["gain"] == 0.0
    assert rows[1]["vs_first"]["gain"] == pytest.approx(rows[1]["score"] - rows[0]["score"], abs=2e-4)
    assert mod.main(["--data", str(cache), "--model", str(exported), "--label", "a", "--label", "b"]) == 2


def test_swa_keeps_the_mean_of_every_epoch_across_resume(runs: dict, cache: Path, work: Path) -> None:
    """--swa: swa.keras is the mean of the epochs' weights (also after --resume), validated per epoch."""
    import numpy as np
    from keras.models import load_model

    run = work / "swa_run"
    args = ("--data", str(cache), "--run", str(run), "--weights", str(runs["run"] / "last.keras"),
            "--frozen-epochs", "0", "--lr-schedule", "constant", "--swa", *TRAIN_ARGS)
    check(run_training("train", *args, "--schedule", "32:1"))
    first = [w.copy() for w in load_model(run / "last.keras").get_weights()]
    assert all(np.array_equal(a, b) for a, b in zip(first, load_model(run / "swa.keras").get_weights(), strict=True))
    check(run_training("train", *args, "--schedule", "32:2", "--resume"))
    second = load_model(run / "last.keras").get_weights()
    mean = load_model(run / "swa.keras").get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(first, second, strict=True))  # it trained
    for a, b, m in zip(first, second, mean, strict=True):
        np.testing.assert_allclose(m, (a.astype(np.float64) + b) / 2, rtol=1e-5, atol=1e-6)
    rows = history(run)
    assert [r["lr"] for r in rows] == [rows[0]["lr"]] * 2  # constant rate
    assert all(r["swa_val_acc"] not in ("", None) for r in rows)
    assert state(run)["swa_epochs"] == 2
    assert state(run)["best_kind"] in ("epoch", "swa")


# -- damaged run files: one line naming the file and what to do (issue 26.5) --------------------------
def damaged_copy(runs: dict, work: Path, name: str) -> Path:
    import shutil

    run = work / name
    shutil.copytree(runs["run"], run)
    return run


def test_resume_from_a_damaged_checkpoint_or_history_is_one_line(runs: dict, cache: Path, work: Path) -> None:
    run = damaged_copy(runs, work, "damaged_run")
    last = run / "last.keras"
    good = last.read_bytes()
    args = ("train", "--data", str(cache), "--run", str(run), "--schedule", "32:3", "--resume", *TRAIN_ARGS)
    for damage in (good[: len(good) // 2], b"", bytes(range(256)) * 64):
        last.write_bytes(damage)
        proc = run_training(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        (line,) = error_lines(proc.stderr)
        assert "last.keras is damaged" in line and "--force" in line, line
    last.write_bytes(good)
    (run / "history.csv").write_bytes(bytes(range(256)) * 8)
    proc = run_training(*args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = error_lines(proc.stderr)
    assert "history.csv is damaged" in line, line


def test_a_bad_unfinished_epoch_entry_redoes_that_epoch(runs: dict, cache: Path, work: Path) -> None:
    run = damaged_copy(runs, work, "bad_partial_run")
    st = state(run)
    st["partial"] = {"epoch": "three", "steps": [1]}
    (run / "state.json").write_text(json.dumps(st))
    proc = run_training("train", "--data", str(cache), "--run", str(run), "--schedule", "32:3", "--resume",
                        *TRAIN_ARGS)
    check(proc)
    assert "unfinished-epoch entry" in proc.stderr and "redone from its start" in proc.stderr
    assert state(run)["epochs_done"] == 3 and "partial" not in state(run)


def test_export_of_a_damaged_checkpoint_is_one_line(cache: Path, work: Path) -> None:
    bad = work / "bad.keras"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    proc = run_training("export", "--checkpoint", str(bad), "--data", str(cache), "--out", str(work / "x.tflite"),
                        "--size", "32")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = error_lines(proc.stderr)
    assert "bad.keras is damaged" in line and "best.keras" in line, line
    assert not (work / "x.tflite").exists()
