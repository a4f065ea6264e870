"""Export: full-integer int8 TFLite + metadata JSON, with a float-vs-int8 parity check.

The exporter fixes the input size, quantises with a representative set of training crops, checks
the int8 model against the float model on the test split (fails when accuracy drops by more than
``max_drop`` points), picks the decision threshold on the validation split (equal female and male
recall) and writes the metadata the runtime reads.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from realtime.classifier import GenderClassifier, ModelInfo, calibrate, in_band
from realtime.errors import UserError
from realtime.face import APPARENT_AGE, P_FEMALE

from .data import Cache, load_cache
from .masks import load_templates, resolve_templates
from .metrics import (
    MIN_FACES_PER_CLASS,
    age_metrics,
    band_for_share,
    choose_threshold,
    fit_temperature,
    group_table,
    metrics,
    reliability,
)
from .model import has_age_head, load_checkpoint, named_outputs, save_snapshot, without_training_heads
from .train import eval_arrays, predict_outputs

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
        items = list(representative)
        converter.representative_dataset = lambda: ([x.astype(np.float32)] for x in tqdm(
            items, desc="int8 calibration", unit="crop", leave=False))
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
    """``p_female`` of the int8 model (flip averaging and calibration as ``info`` says)."""
    return predict_int8_all(path, info, x, threads)[P_FEMALE]


def predict_int8_all(path: Path, info: ModelInfo, x: np.ndarray, threads: int) -> dict[str, np.ndarray]:
    """Every named output of the int8 model, through the runtime's own classifier."""
    clf = GenderClassifier(path, num_threads=threads, info=info)
    outs: list[dict[str, np.ndarray]] = []
    for i in tqdm(range(0, len(x), 64), desc="int8", unit="batch", leave=False, disable=len(x) < 64 * 10):
        outs.append(clf.predict(x[i : i + 64].astype(np.uint8)))
    if not outs:
        return {name: np.zeros((0,), np.float32) for name in clf.output_names}
    return {name: np.concatenate([o[name] for o in outs]) for name in outs[0]}


def float_outputs(model, x: np.ndarray, flip: bool = False, temperature: float = 1.0,
                  flip_band: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(p_female, age)`` of the float Keras model with the runtime's flip averaging (only in
    ``flip_band`` when given) and calibration."""
    p, age = predict_outputs(model, x)
    if flip:
        p2, age2 = predict_outputs(model, x[:, :, ::-1])
        near = np.ones(len(p), bool) if flip_band is None else in_band(p, flip_band)
        p = np.where(near, (p + p2) / 2, p)
        age = None if age is None or age2 is None else np.where(near, (age + age2) / 2, age)
    return (calibrate(np.clip(p, 0, 1), temperature) if temperature != 1.0 else p), age


def ms_per_face(path: Path, info: ModelInfo, threads: int, crops: np.ndarray) -> float:
    """Mean milliseconds to classify one face (batch 1) of ``crops`` with ``info``'s settings (with
    a flip band the cost depends on the face, so real faces are timed, not noise)."""
    import time

    clf = GenderClassifier(path, num_threads=threads, info=info)
    clf.predict(crops[:1])
    clf.predict(crops[:1], flip_average=True)  # both batch shapes allocated before timing
    start = time.perf_counter()
    for i in range(len(crops)):
        clf.predict(crops[i : i + 1])
    return (time.perf_counter() - start) * 1000.0 / max(1, len(crops))


@dataclass
class Splits:
    val: np.ndarray  # adults
    test: np.ndarray  # adults
    test_children: np.ndarray
    test_all: np.ndarray


def export(checkpoint: Path, data: Path, out: Path, size: int, max_drop: float = 0.5,
           rep_samples: int = 300, mask_templates: str | Path | None = "bundled", min_age: int = 13,
           threads: int = 2, training_note: str = "", reproduce: str = "", float16_out: Path | None = None,
           limit: int = 0, flip: str = "auto", flip_share: float = 0.1,
           uncertain_share: float = 0.05) -> dict:
    """Convert ``checkpoint`` to int8 at ``size`` px and write it with its metadata to ``out``.

    On the validation split (adults, plain and masked crops, int8): flip averaging is kept when
    it is more accurate (``flip="auto"``; ``on``/``off`` force it), only for the ``flip_share`` of
    faces nearest the threshold (1.0: every face), a calibration temperature is
    fitted, the threshold equalises female and male recall, and the uncertain band is the narrowest
    one around the threshold that holds ``uncertain_share`` of the faces. Everything is then
    measured once on the test split, which chose nothing.
    """

    if not checkpoint.is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    if flip not in ("auto", "on", "off"):
        raise UserError(f"--flip must be auto, on or off, got {flip!r}")
    if not 0.0 < flip_share <= 1.0:
        raise UserError(f"--flip-share must be in (0, 1], got {flip_share}")
    cache = load_cache(data)
    templates = load_templates(resolve_templates(mask_templates))
    # The feature head is training-only.
    model = without_training_heads(load_checkpoint(checkpoint, "export another checkpoint of the run "
                                                               "(best.keras or last.keras)"))
    age_head = has_age_head(model)
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
    sp = Splits(cache.indices("val", min_age=min_age), cache.indices("test", min_age=min_age),
                cache.indices("test", max_age=min_age - 1), cache.indices("test"))
    if limit:
        sp = Splits(sp.val[:limit], sp.test[:limit], sp.test_children[:limit], sp.test_all[:limit])
    margin = cache.margin
    outputs = named_outputs(model)

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_model = Path(tmp) / "model.tflite"
        tmp_model.write_bytes(tflite)
        base = ModelInfo(input_size=size, crop_margin=margin, face_region=region, outputs=outputs)
        # -- choices on the validation split (int8, adults, plain + masked) --------------------
        xv = np.concatenate([eval_arrays(cache, sp.val, size, masked=False, region=region),
                             eval_arrays(cache, sp.val, size, masked=True, templates=templates, region=region)])
        yv = np.concatenate([labels[sp.val]] * 2)
        choices: dict = {}
        p_off = predict_int8(tmp_model, base, xv, threads)
        # Every face averaged with its mirror, as the runtime's flip averaging (the plain pass is p_off).
        p_all = (p_off + predict_int8(tmp_model, base, xv[:, :, ::-1], threads)) / 2
        # Mirror only the faces nearest the (uncalibrated) threshold: elsewhere the mirror cannot
        # change the label, and each mirrored face costs a second inference.
        t_off = choose_threshold(yv, p_off, min_per_class=2 * MIN_FACES_PER_CLASS)
        flip_band = band_for_share(p_off, t_off, flip_share) if flip_share < 1.0 else None
        near = np.ones(len(p_off), bool) if flip_band is None else in_band(p_off, flip_band)
        p_on = np.where(near, p_all, p_off)
        for tag, p in (("off", p_off), ("on", p_on), ("every_face", p_all)):
            t = choose_threshold(yv, p, min_per_class=2 * MIN_FACES_PER_CLASS)  # yv: each face plain + masked
            choices[f"val_accuracy_flip_{tag}"] = metrics(yv, p, t)["accuracy"]
        better = choices["val_accuracy_flip_on"] > choices["val_accuracy_flip_off"]
        use_flip = flip == "on" or (flip == "auto" and better)
        choices["flip_average"] = use_flip
        choices["flip_share"] = flip_share
        choices["flip_band"] = None if flip_band is None else list(flip_band)
        choices["val_mirrored"] = float(near.mean())
        timed = xv[np.random.default_rng(1).choice(len(xv), size=min(200, len(xv)), replace=False)]
        choices["ms_timed_faces"] = len(timed)
        choices["ms_per_face_flip_off"] = ms_per_face(tmp_model, base, threads, timed)
        choices["ms_per_face_flip_on"] = ms_per_face(
            tmp_model, replace(base, flip_average=True, flip_band=flip_band), threads, timed)
        choices["ms_per_face_flip_every_face"] = ms_per_face(
            tmp_model, replace(base, flip_average=True), threads, timed)
        p_val = p_on if use_flip else p_off
        temperature = fit_temperature(yv, p_val)
        p_cal = calibrate(p_val, temperature)
        choices["temperature"] = temperature
        choices["val_ece_before"] = reliability(yv, p_val)[1]
        choices["val_ece_after"] = reliability(yv, p_cal)[1]
        threshold = choose_threshold(yv, p_cal, min_per_class=2 * MIN_FACES_PER_CLASS)
        per_class = min(int((labels[sp.val] == 1).sum()), int((labels[sp.val] == 0).sum()))
        choices["threshold_rule"] = (
            "equal female and male recall on validation" if per_class >= MIN_FACES_PER_CLASS else
            f"0.5: validation has {per_class} faces of its smaller class, fewer than {MIN_FACES_PER_CLASS} "
            "needed to move it")
        band = band_for_share(p_cal, threshold, uncertain_share)
        choices["uncertain_share_target"] = uncertain_share
        choices["val_uncertain"] = float(in_band(p_cal, band).mean())
        info = replace(base, threshold=threshold, uncertain_band=band, temperature=temperature,
                       flip_average=use_flip, flip_band=flip_band if use_flip else None,
                       child_age=float(min_age) if age_head else None)
        log.info("validation: flip averaging %s (%.4f vs %.4f), temperature %.3f (ECE %.4f -> %.4f), "
                 "threshold %.3f, uncertain band %s", "on" if use_flip else "off",
                 choices["val_accuracy_flip_on"], choices["val_accuracy_flip_off"], temperature,
                 choices["val_ece_before"], choices["val_ece_after"], threshold, band)
        # -- the test split, measured once ----------------------------------------------------
        report: dict = {"threshold": threshold, "uncertain_band": list(band), "validation_choices": choices}
        y_test = labels[sp.test]
        p_test: dict[str, np.ndarray] = {}
        for tag, masked in (("test", False), ("test_masked", True)):
            xt = eval_arrays(cache, sp.test, size, masked=masked, templates=templates, region=region)
            if not masked:
                xt_plain = xt
            p_float, _ = float_outputs(model, xt, use_flip, temperature, info.flip_band)
            p_int8 = predict_int8(tmp_model, info, xt, threads)
            m_float = metrics(y_test, p_float, threshold)
            m_int8 = metrics(y_test, p_int8, threshold, band)
            m_int8["float_accuracy"] = m_float["accuracy"]
            m_int8["agreement_with_float"] = float(((p_float >= threshold) == (p_int8 >= threshold)).mean())
            m_int8["ece"] = reliability(y_test, p_int8)[1]
            report[tag] = m_int8
            p_test[tag] = p_int8
            report[f"{tag}_by_group"] = group_table([cache.meta[i] for i in sp.test], p_int8, threshold)
            drop = (m_float["accuracy"] - m_int8["accuracy"]) * 100
            log.info("%s: float %.4f, int8 %.4f (drop %.2f points)", tag, m_float["accuracy"],
                     m_int8["accuracy"], drop)
            if not masked:
                check_parity(m_float["accuracy"], m_int8["accuracy"], len(y_test), max_drop, p_int8)
        from .distill import CLEANING_TEACHERS, teacher_flags

        flags = teacher_flags(cache, data / "teachers")
        if flags is not None:  # a second, clearly marked line: the test split without teacher-flagged faces
            keep = ~flags[sp.test]
            report["test_without_teacher_flagged"] = {
                "rule": f"{' and '.join(CLEANING_TEACHERS)} both contradict the label with p >= 0.9",
                "excluded": int((~keep).sum()),
                **{tag: metrics(y_test[keep], p[keep], threshold, band) for tag, p in p_test.items()}}
        report["test_by_face_px"] = face_size_table(xt_plain, y_test, tmp_model, info, threads, threshold)
        report["test_framing"] = framing_table(cache, sp.test, size, region, y_test, tmp_model, info, threads)
        if len(sp.test_children):
            xc = eval_arrays(cache, sp.test_children, size, masked=False, region=region)
            report[f"test_children_under_{min_age}"] = metrics(
                labels[sp.test_children], predict_int8(tmp_model, info, xc, threads), threshold, band)
        if age_head:
            age = age_report(cache, sp.test_all, size, region, tmp_model, info, threads, min_age)
            if age:
                report["test_age"] = age
        meta = {
            "model": out.name,
            "architecture": "VGG16 (keras.applications, include_top=False) + GAP + Dense(256) + Dense(1, sigmoid)"
                            + (" + age branch Dense(128) + Dense(1) (years)" if age_head else ""),
            "input_size": size,
            "colour_order": "BGR",
            "input_scaling": "pixels 0..255 as float (int8 input: scale/zero-point in the model); "
                             "ImageNet mean subtraction is inside the model",
            "crop_margin": margin,
            "crop": "realtime.crop.crop_face on the BlazeFace box",
            "face_region": region,
            "output": "p_female (sigmoid)" + (" and age (years)" if age_head else ""),
            "labels": {"positive": "female", "negative": "male"},
            "threshold": threshold,
            "uncertain_band": list(band),
            "calibration": {"temperature": temperature, "fitted_on": "validation split, adults, plain + masked"},
            "flip_average": use_flip,
            **({"flip_band": list(flip_band)} if use_flip and flip_band is not None else {}),
            "training": training_note,
            **({"reproduce": reproduce} if reproduce else {}),
            "training_data": f"UTKFace (non-commercial research licence), ages >= {min_age} for training",
            "split_sizes": _split_sizes(cache, min_age),
            "metrics": report,
            "training_commit": _git_commit(),
            "exported": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "checkpoint": str(checkpoint),
            "size_bytes": len(tflite),
        }
        if age_head:
            meta["outputs"] = outputs
            meta["child_age"] = float(min_age)
            meta["training_data"] = ("UTKFace (non-commercial research licence), all ages; the gender loss of "
                                     f"faces under {min_age} down-weighted")
        distillation = Path(checkpoint).parent / "distillation.json"
        if distillation.is_file():  # what the student learned from (training.distill), for the card
            meta["distillation"] = json.loads(distillation.read_text())
            teachers_meta = data / "teachers" / "teachers.json"
            if teachers_meta.is_file():
                meta["distillation"]["teacher_files"] = json.loads(teachers_meta.read_text()).get("teachers", {})
        curve = Path(checkpoint).parent / "history.csv"
        if curve.is_file():  # the run's per-epoch record, so the model card needs no file outside models/
            with curve.open(newline="") as f:
                meta["training_curve"] = list(csv.DictReader(f))
        cache_report = data / "report.json"
        described = json.loads(cache_report.read_text()).get("data") if cache_report.is_file() else None
        if described:
            meta["data"] = described
            if described.get("name") != "UTKFace":
                meta["training_data"] = f"{described['name']} (licence: {described['licence']})"
        tmp_out = out.with_name(out.name + ".partial")
        tmp_out.write_bytes(tflite)
        meta_path = out.with_suffix(".json")
        tmp_meta = meta_path.with_name(meta_path.name + ".partial")
        tmp_meta.write_text(json.dumps(meta, indent=2))
        tmp_out.replace(out)
        tmp_meta.replace(meta_path)
    log.info("wrote %s (%.1f MB) and %s", out, len(tflite) / 1e6, meta_path)
    if float16_out:
        save_snapshot(model, float16_out)
        log.info("wrote %s (%.1f MB): the float weights as float16, for --weights %s", float16_out,
                 float16_out.stat().st_size / 1e6, float16_out)
    return meta


def check_parity(float_acc: float, int8_acc: float, n: int, max_drop: float, p_int8: np.ndarray) -> None:
    """Refuse an int8 model that is too far below float, and say why it may be."""
    drop = (float_acc - int8_acc) * 100
    faces = int(round((float_acc - int8_acc) * n))
    if drop <= max_drop or faces <= 1:  # one face on a small split is noise, not a conversion problem
        return
    levels = len(np.unique(np.round(p_int8, 4)))
    hint = (f"; the int8 outputs take only {levels} distinct values, as for an undertrained model whose "
            "outputs all sit near 0.5 (train longer)" if levels <= 8 else "")
    raise ParityError(f"int8 accuracy drops {drop:.2f} points below float on the test split ({faces} of {n} "
                      f"faces: float {float_acc:.4f}, int8 {int8_acc:.4f}; limit {max_drop} points, set with "
                      f"--max-drop){hint}; not exported")


FRAMINGS = (("runtime crop", 1.0), ("20 % looser", 1.2), ("15 % tighter", 0.85))


def framing_table(cache: Cache, idx: np.ndarray, size: int, region: str, y: np.ndarray, model: Path,
                  info: ModelInfo, threads: int) -> list[dict]:
    """Accuracy with the face re-cropped looser and tighter than the runtime crop (needs a cache
    prepared with context; otherwise only the runtime crop is measured)."""
    rows = []
    for name, scale in FRAMINGS:
        if scale > cache.context + 1e-6 and scale != 1.0:
            continue
        x = eval_arrays(cache, idx, size, masked=False, region=region, scale=scale)
        m = metrics(y, predict_int8(model, info, x, threads), info.threshold)
        rows.append({"framing": name, "scale": scale, "n": m["n"], "accuracy": m["accuracy"],
                     "recall_female": m["recall_female"], "recall_male": m["recall_male"]})
    return rows


def age_report(cache: Cache, idx: np.ndarray, size: int, region: str, model: Path, info: ModelInfo,
               threads: int, min_age: int) -> dict:
    """Apparent age on the whole test split (all ages), the child gate, and gender accuracy on the
    adults the gate lets through."""
    ages = cache.ages()[idx]
    known = np.isfinite(ages)
    if not known.any():
        return {}  # no ages in this data: the age head is kept but cannot be measured here
    idx, ages = idx[known], ages[known]
    x = eval_arrays(cache, idx, size, masked=False, region=region)
    values = predict_int8_all(model, info, x, threads)
    report = age_metrics(ages, values[APPARENT_AGE], float(min_age))
    adult_kept = (ages >= min_age) & (values[APPARENT_AGE] >= min_age)
    y = cache.labels()[idx]
    report["gender_on_adults_not_gated"] = metrics(y[adult_kept], values[P_FEMALE][adult_kept], info.threshold,
                                                   info.uncertain_band)
    return report


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
