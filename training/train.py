"""Training: multi-size schedule, two phases when pretrained, checkpoints every epoch, resume.

A run folder holds ``last.keras`` (model + optimiser, rewritten every epoch), ``best.keras`` (best
validation accuracy so far), ``state.json`` (epochs done, best score, the run's arguments),
``history.csv`` and ``curves.png``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from realtime.crop import apply_region, resize_square
from realtime.errors import UserError

from .augment import AugmentConfig, augment, masked_copy
from .data import Cache, load_cache
from .distill import DEFAULT_TEACHERS, Targets, build_targets, plain_targets
from .errors import TrainingInterruptedError
from .history import read_history
from .masks import Template, load_templates, resolve_templates
from .model import (
    FEATURE,
    base_model,
    build_model,
    has_age_head,
    has_feature_head,
    load_checkpoint,
    save_checkpoint,
    soft_binary_accuracy,
    weights_have_age_head,
)

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: str
    run: str
    weights: str = "none"
    schedule: list[tuple[int, int]] = field(default_factory=lambda: [(64, 12)])
    batch_size: int = 32
    lr: float = 1e-4
    min_lr_ratio: float = 0.05
    frozen_epochs: int = 2  # phase 1 (frozen base) when weights are pretrained
    unfrozen_lr_scale: float = 0.1  # phase 2 (whole network) of a pretrained start runs at this x the rate
    min_age: int = 13  # gender is validated on people this old or older
    train_min_age: int | None = None  # None: min_age without the age head, all ages with it
    age_head: bool = False
    age_weight: float = 0.03  # loss weight of the age Huber loss (years) against gender BCE
    child_gender_weight: float = 0.3  # gender loss weight of faces under min_age (age head runs)
    lr_schedule: str = "cosine"  # cosine over the schedule, plateau (halve lr after 2 flat epochs) or constant
    swa: bool = False  # average the weights of every epoch (stochastic weight averaging), validated per epoch
    patience: int = 0  # >0: stop when the validation score has not improved for this many epochs
    mask_prob: float = 0.4
    mask_templates: str | None = None
    seed: int = 1
    max_steps: int = 0  # >0 caps batches per epoch (smoke tests)
    val_limit: int = 0  # >0 caps validation images (smoke tests)
    face_region: str = "full"  # "upper": train on the upper half only (masked-face experiment)
    # Distillation (training.distill): teacher outputs cached by `python -m training teach`.
    teacher_cache: str = ""  # folder of teacher outputs (CACHE/teachers); "" = no teachers
    teachers: tuple[str, ...] = DEFAULT_TEACHERS
    teacher_weight: float = 0.7  # share of the teachers' p(female) in the gender target (the rest: the label)
    teacher_mix: str = "fixed"  # fixed share per face, or scaled by the teachers' agreement (distill.MIXES)
    feature_weight: float = 0.5  # weight of the cosine loss on faceres' face feature (0: no feature head)
    clean_labels: str = "flip"  # flip train/val labels that the cleaning teachers confidently contradict
    clean_threshold: float = 0.9


SMALL_VAL = 200  # fewer validation faces: one face moves the score by half a point or more


def parse_schedule(text: str) -> list[tuple[int, int]]:
    """``"64:8,96:2"`` → ``[(64, 8), (96, 2)]`` (input size : epochs)."""
    try:
        out = [(int(a), int(b)) for a, b in (part.split(":") for part in text.split(",") if part)]
    except ValueError as exc:
        raise UserError(f"bad --schedule {text!r}; expected SIZE:EPOCHS[,SIZE:EPOCHS...]") from exc
    if not out or any(s < 32 or e < 1 for s, e in out):
        raise UserError(f"bad --schedule {text!r}; sizes >= 32 and epochs >= 1")
    return out


class CropSequence(keras.utils.PyDataset):
    """Batches of augmented crops at one input size, reshuffled each epoch, class-balanced.

    The order of an epoch and the augmentation of each batch are functions of ``(seed, epoch,
    step)`` only (:meth:`set_epoch`), so a run is repeatable and a run resumed in the middle of an
    epoch sees exactly the batches it had not seen yet. With ``age_head`` the targets are
    ``{"p_female", "age"}``; faces under ``adult_age`` weigh ``child_weight`` in the gender loss
    (children's faces carry little gender signal)."""

    def __init__(self, cache: Cache, indices: np.ndarray, size: int, batch_size: int,
                 cfg: AugmentConfig, templates: list[Template], seed: int, max_steps: int = 0,
                 region: str = "full", age_head: bool = False, adult_age: int = 13,
                 child_weight: float = 1.0, targets: Targets | None = None, feature: bool = False):
        super().__init__()
        self.cache, self.size, self.batch_size, self.cfg = cache, size, batch_size, cfg
        self.templates = templates
        self.indices = indices
        targets = targets or plain_targets(cache)
        labels = targets.labels[indices]
        counts = np.bincount(labels, minlength=2).astype(np.float64)
        self.weights = (len(labels) / (2 * np.maximum(counts, 1)))[labels].astype(np.float32)
        self.labels = targets.p_female[indices].astype(np.float32)
        self.age_head = age_head
        self.features = targets.feature if feature else None
        ages = targets.age[indices]
        self.ages = np.nan_to_num(ages, nan=0.0).astype(np.float32)
        self.age_weights = np.isfinite(ages).astype(np.float32)
        if age_head:
            child = np.nan_to_num(ages, nan=99) < adult_age
            self.weights = self.weights * np.where(child, child_weight, 1.0).astype(np.float32)
        self.seed = seed
        self.max_steps = max_steps
        self.region = region
        self.set_epoch(0)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Order the crops for ``epoch`` and start ``skip`` batches into it."""
        self.epoch, self.skip = epoch, skip
        self.order = np.random.default_rng([self.seed, epoch]).permutation(len(self.indices))

    @property
    def steps_per_epoch(self) -> int:
        n = math.ceil(len(self.indices) / self.batch_size)
        return min(n, self.max_steps) if self.max_steps else n

    def __len__(self) -> int:
        return max(1, self.steps_per_epoch - self.skip)

    def __getitem__(self, i: int):
        step = i + self.skip
        pos = self.order[step * self.batch_size : (step + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, self.epoch, step])
        batch = np.empty((len(pos), self.size, self.size, 3), np.float32)
        for k, p in enumerate(pos):
            idx = self.indices[p]
            crop = augment(np.asarray(self.cache.crops[idx]),
                           np.asarray(self.cache.landmarks[idx], np.float32), rng, self.cfg,
                           self.templates, self.cache.context)
            batch[k] = apply_region(resize_square(crop, self.size), self.region)
        if not self.age_head and self.features is None:
            return batch, self.labels[pos], self.weights[pos]
        y = {"p_female": self.labels[pos]}
        w = {"p_female": self.weights[pos]}
        if self.age_head:
            y["age"], w["age"] = self.ages[pos], self.age_weights[pos]
        if self.features is not None:
            feat = np.asarray(self.features[self.indices[pos]], np.float32)
            ok = np.isfinite(feat).all(axis=1)
            y[FEATURE], w[FEATURE] = np.nan_to_num(feat), ok.astype(np.float32)
        return batch, y, w


def eval_arrays(cache: Cache, indices: np.ndarray, size: int, masked: bool,
                templates: list[Template] | None = None, region: str = "full", scale: float = 1.0
                ) -> np.ndarray:
    """Validation/test inputs at ``size``, optionally with a deterministic mask per image.

    ``scale`` re-frames each face: 1.0 is the runtime crop, 1.2 a crop 20 % looser, 0.85 one
    15 % tighter (the cache must hold the context: ``prepare --context``)."""
    out = np.empty((len(indices), size, size, 3), np.float32)
    for k, idx in enumerate(indices):
        window = np.asarray(cache.crops[idx])
        if masked:
            window = masked_copy(window, np.asarray(cache.landmarks[idx], np.float32), int(idx), templates)
        out[k] = apply_region(resize_square(cache.view(int(idx), scale, window), size), region)
    return out


def predict_outputs(model: keras.Model, x: np.ndarray, batch_size: int = 64
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """``(p_female, age)`` of a Keras model of ours (age is None without the age head)."""
    out = model.predict(x, batch_size=batch_size, verbose=0)
    if isinstance(out, dict):
        return np.asarray(out["p_female"]).reshape(-1), np.asarray(out["age"]).reshape(-1)
    return np.asarray(out).reshape(-1), None


def balanced_accuracy(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> tuple[float, float, float]:
    pred = (p >= threshold).astype(int)
    rec_f = float((pred[y == 1] == 1).mean()) if (y == 1).any() else float("nan")
    rec_m = float((pred[y == 0] == 0).mean()) if (y == 0).any() else float("nan")
    return float((pred == y).mean()), rec_f, rec_m


class EpochEnd(keras.callbacks.Callback):
    """Validate (plain + masked), write history, curves, last/best checkpoints and state."""

    def __init__(self, trainer: Trainer, size: int, resumed: bool = False):
        super().__init__()
        self.trainer, self.size, self.resumed = trainer, size, resumed

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.trainer.end_epoch(self.model, epoch, self.size, logs or {}, self.resumed)


class StepCounter(keras.callbacks.Callback):
    """Counts finished steps of the current epoch, so Ctrl-C can keep them, and shows them as a
    progress bar named after the run's own epoch count (Keras' bar, fitting one epoch per call,
    would say "Epoch 6/6" on epoch 6 of 9). Away from a terminal (a log file) it updates twice a
    minute."""

    def __init__(self, trainer: Trainer, skip: int, epoch: int, size: int, steps: int):
        super().__init__()
        self.trainer, self.skip = trainer, skip
        trainer.steps_done = skip
        self.bar = tqdm(total=steps, initial=skip, unit="step", dynamic_ncols=True,
                        desc=f"epoch {epoch + 1}/{trainer.total_epochs} ({size} px)",
                        mininterval=1.0 if sys.stderr.isatty() else 30.0)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.trainer.steps_done = self.skip + batch + 1
        self.bar.update(self.trainer.steps_done - self.bar.n)
        logs = logs or {}
        acc = logs.get("acc", logs.get("p_female_acc"))
        if "loss" in logs:
            self.bar.set_postfix_str(f"loss {float(logs['loss']):.4f}"
                                     + (f", acc {float(acc):.3f}" if acc is not None else ""), refresh=False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.close()  # before EpochEnd validates and logs the epoch's line

    def close(self) -> None:
        self.bar.close()


SHIPPED = "shipped"


def resolve_weights(weights: str) -> str:
    """``shipped`` → the shipped model's float16 weights if the package has them, else the shipped
    int8 model itself (dequantised)."""
    if weights != SHIPPED:
        return weights
    from realtime.paths import GENDER_MODEL, MODELS_DIR

    snapshot = MODELS_DIR / "gender_vgg16_float16.npz"
    return str(snapshot if snapshot.is_file() else GENDER_MODEL)


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False, force: bool = False):
        self.cfg = cfg
        self.run = Path(cfg.run)
        if not resume and not force and ((self.run / "state.json").is_file() or (self.run / "last.keras").is_file()):
            raise UserError(f"{self.run} already holds a training run; continue it with --resume, or start over "
                            "(deleting its history and checkpoints) with --force")
        self.cache = load_cache(Path(cfg.data))
        self.weights = resolve_weights(cfg.weights)
        if self.weights not in ("none", "imagenet") and not Path(self.weights).is_file():
            raise UserError(f"--weights {cfg.weights}: file not found")
        # Fine-tuning a model with an apparent-age head keeps the head (and so the child gate): on
        # this data's ages, or on the start model's own age outputs where the data has none.
        self.own_ages = False
        if not cfg.age_head and self.weights not in ("none", "imagenet") and weights_have_age_head(self.weights):
            cfg = self.cfg = replace(cfg, age_head=True)
            self.own_ages = not np.isfinite(self.cache.ages()).any()
            log.info("the start weights have an apparent-age head: kept, and trained on %s",
                     "the start model's own age outputs (this data has no ages)" if self.own_ages
                     else "this data's ages")
        self.templates = load_templates(resolve_templates(cfg.mask_templates))
        train_min_age = cfg.train_min_age
        if train_min_age is None:
            train_min_age = 0 if cfg.age_head else cfg.min_age
        self.train_idx = self.cache.indices("train", min_age=train_min_age)
        self.val_idx = self.cache.indices("val", min_age=0 if cfg.age_head else cfg.min_age)
        if cfg.val_limit:
            self.val_idx = self.val_idx[: cfg.val_limit]
        if len(self.train_idx) == 0 or len(self.val_idx) == 0:
            raise UserError(f"{cfg.data}: the train or val split is empty")
        labels = self.cache.labels()
        for split, idx in (("train", self.train_idx), ("val", self.val_idx)):
            missing = [name for value, name in ((1, "female"), (0, "male")) if not (labels[idx] == value).any()]
            if missing:
                raise UserError(f"{cfg.data}: the {split} split has no {' and no '.join(missing)} faces; a classifier "
                                "needs both: add images to that folder and prepare again")
        self.targets = plain_targets(self.cache)
        if cfg.teacher_cache:
            self.targets = build_targets(self.cache, Path(cfg.teacher_cache), tuple(cfg.teachers), cfg.teacher_weight,
                                         clean=cfg.clean_labels, clean_threshold=cfg.clean_threshold,
                                         feature=cfg.feature_weight > 0, mix=cfg.teacher_mix)
        if cfg.age_head and not self.own_ages and not np.isfinite(self.targets.age[self.train_idx]).any():
            raise UserError(f"{cfg.data}: the age head needs ages, and this cache has none")
        self.y_val = self.targets.labels[self.val_idx]
        ages = self.cache.ages()[self.val_idx]
        self.age_val = ages
        self.val_adult = ~(np.nan_to_num(ages, nan=99) < cfg.min_age)
        self._val_cache: dict[tuple[int, bool], np.ndarray] = {}
        adults = int(self.val_adult.sum())
        if adults < SMALL_VAL:
            log.warning("validation has %d faces: each is %.1f points of accuracy, so epochs will score alike "
                        "and the best one is chosen by chance; use more images (at least %d per class), "
                        "--val-fraction 0.2, or give a validation folder (prepare --val DIR)",
                        adults, 100 / max(1, adults), SMALL_VAL // 2)
        self.run.mkdir(parents=True, exist_ok=True)  # only once the run can start
        if cfg.teacher_cache:
            (self.run / "distillation.json").write_text(json.dumps(self.targets.report, indent=2))
        self.state = self._load_state()
        self.total_epochs = sum(e for _, e in cfg.schedule)
        self.epoch_started = time.time()
        self.steps_done = 0
        self.current_lr = cfg.lr
        self.swa_avg: list[np.ndarray] | None = None  # running mean of the epochs' weights (--swa)
        keras.utils.set_random_seed(cfg.seed)
        try:
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
        except (ImportError, AttributeError, RuntimeError):  # other Keras backends: seeds only
            pass

    # -- state ----------------------------------------------------------------------------
    def _load_state(self) -> dict:
        path = self.run / "state.json"
        if path.is_file():
            try:
                state = json.loads(path.read_text())
                int(state["epochs_done"]), float(state["best_val_acc"])
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                raise UserError(f"{path} is damaged: not a valid training state ({exc}); start the run afresh with "
                                "--force, or continue from its best.keras in a new run (--weights)") from exc
            if not isinstance(state, dict):
                raise UserError(f"{path} is damaged: not a valid training state; start afresh with --force")
            partial = state.get("partial")
            if partial is not None and not _valid_partial(partial):
                log.warning("%s: the unfinished-epoch entry %r is not valid; that epoch is redone from its start",
                            path, partial)
                state.pop("partial")
            return state
        return self._new_state()

    def _check_history(self) -> None:
        path = self.run / "history.csv"
        if not path.is_file():
            return
        try:
            read_history(path)
        except ValueError as exc:
            raise UserError(f"{path} is damaged ({exc}); move it away (the curve restarts empty) and --resume "
                            "again") from exc

    def _new_state(self) -> dict:
        return {"epochs_done": 0, "best_val_acc": -1.0, "best_epoch": -1, "lr": self.cfg.lr, "flat_epochs": 0}

    def _save_state(self) -> None:
        self.state["config"] = asdict(self.cfg)
        tmp = self.run / "state.json.partial"
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.replace(self.run / "state.json")

    # -- schedule -------------------------------------------------------------------------
    def lr_at(self, epoch: int) -> float:
        """Cosine decay over the whole schedule, per epoch (so resume picks the same value); with
        the plateau schedule, the current rate from the state; constant: always ``lr``."""
        if self.cfg.lr_schedule == "plateau":
            return float(self.state.get("lr", self.cfg.lr))
        if self.cfg.lr_schedule == "constant":
            return self.cfg.lr
        t = epoch / max(1, self.total_epochs - 1)
        floor = self.cfg.lr * self.cfg.min_lr_ratio
        return floor + 0.5 * (self.cfg.lr - floor) * (1 + math.cos(math.pi * min(1.0, t)))

    def pretrained(self) -> bool:
        return self.weights != "none"

    # -- main loop ------------------------------------------------------------------------
    def fit(self, resume: bool, stop_after: int = 0) -> dict:
        last = self.run / "last.keras"
        resumed_after = -1
        if resume and stop_after and last.is_file() and self.state["epochs_done"] >= stop_after:
            log.info("%s: %d epochs already done (--stop-after %d): nothing to train", self.run,
                     self.state["epochs_done"], stop_after)
            return self.state
        if resume and last.is_file():
            self._check_history()  # before the model: a damaged history would fail after a whole epoch
            best = self.run / "best.keras"
            model = load_checkpoint(last, (f"continue from the best epoch in a new run (--weights {best} --run NEW), "
                                           "or start this run afresh with --force") if best.is_file()
                                    else "start this run afresh with --force")
            resumed_after = self.state["epochs_done"]
            swa = self.run / "swa.keras"
            if self.cfg.swa and swa.is_file():
                try:
                    self.swa_avg = load_checkpoint(swa).get_weights()
                except UserError as exc:  # the mean restarts from this epoch: nothing is lost but the average
                    log.warning("%s; the weight average starts again from this epoch", exc)
                    self.state["swa_epochs"] = 0
            log.info("resumed %s after %d epochs", last, self.state["epochs_done"])
        else:
            if resume:
                log.warning("no checkpoint in %s; starting a new run", self.run)
            self.state = self._new_state()
            for name in ("history.csv", "curves.png", "best.keras", "last.keras", "swa.keras"):
                (self.run / name).unlink(missing_ok=True)
            model = build_model(self.weights, age_head=self.cfg.age_head, feature_dim=self.feature_dim)
            self._compile(model, self.lr_at(0), trainable_base=not self.pretrained())
        if self.own_ages:
            self._start_model_ages(model, first=resumed_after < 0)
        aug = AugmentConfig(mask_prob=self.cfg.mask_prob)
        start = 0
        for size, epochs in self.cfg.schedule:
            end = start + epochs
            done = self.state["epochs_done"]
            if done >= end:
                start = end
                continue
            first = max(start, done)
            log.info("training at %d px, epochs %d..%d of %d", size, first + 1, end, self.total_epochs)
            seq = CropSequence(self.cache, self.train_idx, size, self.cfg.batch_size, aug,
                               self.templates, seed=self.cfg.seed, max_steps=self.cfg.max_steps,
                               region=self.cfg.face_region, age_head=self.cfg.age_head,
                               adult_age=self.cfg.min_age, child_weight=self.cfg.child_gender_weight,
                               targets=self.targets, feature=has_feature_head(model))
            for epoch in range(first, end):
                if self.state.get("stopped"):
                    log.info("validation stopped improving: %s", self.state["stopped"])
                    return self.state
                if stop_after and epoch >= stop_after:
                    log.info("stopped after epoch %d of %d as asked (--stop-after); the same command with "
                             "--resume goes on", epoch, self.total_epochs)
                    return self.state
                frozen = self.pretrained() and epoch < self.cfg.frozen_epochs
                lr = self.lr_at(epoch)
                if self.pretrained() and not frozen:
                    lr *= self.cfg.unfrozen_lr_scale  # fine-tuning: a low rate keeps what the weights know
                self._set_phase(model, frozen, lr)
                self.current_lr = lr
                partial = self.state.get("partial") or {}
                skip = int(partial.get("steps", 0)) if partial.get("epoch") == epoch else 0
                if skip:
                    log.info("epoch %d: going on after step %d of %d", epoch + 1, skip, seq.steps_per_epoch)
                seq.set_epoch(epoch, skip)
                self.epoch_started = time.time()
                steps = StepCounter(self, skip, epoch, size, seq.steps_per_epoch)
                try:
                    model.fit(seq, epochs=epoch + 1, initial_epoch=epoch, verbose=0,
                              callbacks=[steps, EpochEnd(self, size, resumed=bool(skip) or epoch == resumed_after)])
                except KeyboardInterrupt:
                    raise self._interrupted(model, epoch, seq.steps_per_epoch) from None
                finally:
                    steps.close()
            start = end
        return self.state

    def _interrupted(self, model: keras.Model, epoch: int, steps_per_epoch: int) -> TrainingInterruptedError:
        """Keep the finished steps of this epoch in last.keras and say how to go on."""
        steps = self.steps_done
        if steps > 0 and steps < steps_per_epoch:
            save_checkpoint(model, self.run / "last.keras")
            self.state["partial"] = {"epoch": epoch, "steps": steps}
            self._save_state()
            kept = (f"{self.state['epochs_done']} epoch(s) and {steps} of {steps_per_epoch} steps of epoch "
                    f"{epoch + 1}")
        else:
            kept = f"{self.state['epochs_done']} epoch(s)"
        where = self.run / "last.keras"
        if not where.is_file():
            return TrainingInterruptedError("interrupted before the first step finished; nothing was kept")
        return TrainingInterruptedError(f"interrupted: {kept} kept in {where}; continue with the same command "
                                   "plus --resume")

    def _start_model_ages(self, model: keras.Model, first: bool) -> None:
        """Age targets where the data has none: the start model's own apparent age, computed once
        before the first step (RUN/start_ages.npy, so a resumed run keeps the same targets)."""
        path = self.run / "start_ages.npy"
        if path.is_file():
            ages = np.load(path)
        elif not first:
            raise UserError(f"{path} is missing: the age targets of this run are gone; start afresh with --force")
        else:
            size, idx = self.cfg.schedule[0][0], np.arange(len(self.cache.meta))
            ages = np.concatenate([predict_outputs(model, eval_arrays(self.cache, idx[i:i + 256], size, False,
                                                                      region=self.cfg.face_region))[1]
                                   for i in range(0, len(idx), 256)]).astype(np.float32)
            np.save(path, ages)
        self.targets.age = np.where(np.isfinite(self.targets.age), self.targets.age, ages).astype(np.float32)

    @property
    def feature_dim(self) -> int:
        """The training-only feature head's width: faceres' feature when it is distilled."""
        feature = self.targets.feature
        return int(feature.shape[1]) if feature is not None and self.cfg.feature_weight > 0 else 0

    def _compile(self, model: keras.Model, lr: float, trainable_base: bool) -> None:
        base_model(model).trainable = trainable_base
        # Soft teacher targets need no label smoothing; hard labels get a little.
        gender_loss = keras.losses.BinaryCrossentropy(label_smoothing=0.0 if self.cfg.teacher_cache else 0.05)
        if not has_age_head(model) and not has_feature_head(model):
            model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=gender_loss,
                          metrics=[keras.metrics.MeanMetricWrapper(soft_binary_accuracy, name="acc")])
            return
        loss, weights = {"p_female": gender_loss}, {"p_female": 1.0}
        metrics: dict[str, list] = {"p_female": [keras.metrics.MeanMetricWrapper(soft_binary_accuracy, name="acc")]}
        if has_age_head(model):
            loss["age"], weights["age"] = keras.losses.Huber(delta=5.0), self.cfg.age_weight
            metrics["age"] = [keras.metrics.MeanAbsoluteError(name="mae")]
        if has_feature_head(model):
            loss[FEATURE], weights[FEATURE] = keras.losses.CosineSimilarity(), self.cfg.feature_weight
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=loss, loss_weights=weights,
                      metrics=metrics)

    def _set_phase(self, model: keras.Model, frozen: bool, lr: float) -> None:
        base = base_model(model)
        if base.trainable == frozen:  # phase change: recompile (fresh optimiser for fine-tuning)
            self._compile(model, lr, trainable_base=not frozen)
        model.optimizer.learning_rate.assign(lr)

    # -- per epoch ------------------------------------------------------------------------
    def validate(self, model: keras.Model, size: int) -> dict[str, float]:
        out = {}
        for masked in (False, True):
            key = (size, masked)
            if key not in self._val_cache:
                self._val_cache = {k: v for k, v in self._val_cache.items() if k[0] == size}
                self._val_cache[key] = eval_arrays(self.cache, self.val_idx, size, masked, self.templates,
                                                   self.cfg.face_region)
            p, age = predict_outputs(model, self._val_cache[key])
            adult = self.val_adult
            acc, rf, rm = balanced_accuracy(self.y_val[adult], p[adult])
            tag = "val_masked" if masked else "val"
            out[f"{tag}_acc"], out[f"{tag}_recall_f"], out[f"{tag}_recall_m"] = acc, rf, rm
            known = np.isfinite(self.age_val)
            if age is not None and known.any():
                out[f"{tag}_age_mae"] = float(np.abs(age[known] - self.age_val[known]).mean())
                child = ~adult & known
                if child.any():  # how well the age gate would work at 13 years
                    out[f"{tag}_child_gated"] = float((age[child] < self.cfg.min_age).mean())
                    out[f"{tag}_adult_gated"] = float((age[adult & known] < self.cfg.min_age).mean())
        return out

    def end_epoch(self, model: keras.Model, epoch: int, size: int, logs: dict, resumed: bool = False) -> None:
        log.info("epoch %d: validating on %d faces, plain and masked", epoch + 1, len(self.val_idx))
        metrics = self.validate(model, size)
        row = {"epoch": epoch + 1, "size": size, "lr": self.current_lr,
               "loss": logs.get("loss"), "acc": logs.get("acc", logs.get("p_female_acc")), **metrics,
               "seconds": round(time.time() - self.epoch_started, 1), "resumed": int(resumed)}
        self.state.pop("partial", None)
        save_checkpoint(model, self.run / "last.keras")
        improved = self._keep_if_best(model, metrics, epoch, size, "epoch")
        if self.cfg.swa:
            swa_metrics, swa_best = self._average_weights(model, epoch, size, metrics)
            row.update({f"swa_{k}": v for k, v in swa_metrics.items()})
            improved = improved or swa_best
        _append_csv(self.run / "history.csv", row)
        if improved:
            self.state["flat_epochs"] = 0
        else:
            self.state["flat_epochs"] = self.state.get("flat_epochs", 0) + 1
            if self.cfg.lr_schedule == "plateau" and self.state["flat_epochs"] % 2 == 0:
                self.state["lr"] = max(self.cfg.lr * self.cfg.min_lr_ratio, self.lr_at(epoch) / 2)
                model.optimizer.learning_rate.assign(self.state["lr"])
            if self.cfg.patience and self.state["flat_epochs"] >= self.cfg.patience:
                self.state["stopped"] = (
                    f"no better validation score for {self.state['flat_epochs']} epochs "
                    f"(best {self.state['best_val_acc']:.4f} at epoch {self.state['best_epoch']})")
        self.state["epochs_done"] = epoch + 1
        self._save_state()
        plot_history(self.run / "history.csv", self.run / "curves.png")
        log.info("epoch %d/%d at %d px: %s", epoch + 1, self.total_epochs, size,
                 ", ".join(f"{k}={v:.3g}" if k == "lr" else f"{k}={v:.4f}" for k, v in row.items()
                           if isinstance(v, float)))

    def _keep_if_best(self, model: keras.Model, metrics: dict[str, float], epoch: int, size: int,
                      kind: str) -> bool:
        """Save ``model`` as best.keras when its validation score (mean of the plain and masked
        balanced accuracy) beats the run's best so far; say whether it did."""
        score = (metrics["val_acc"] + metrics["val_masked_acc"]) / 2
        if score <= self.state["best_val_acc"]:
            return False
        self.state.update(best_val_acc=score, best_epoch=epoch + 1, best_size=size, best_kind=kind)
        save_checkpoint(model, self.run / "best.keras")
        return True

    def _average_weights(self, model: keras.Model, epoch: int, size: int,
                         metrics: dict[str, float]) -> tuple[dict[str, float], bool]:
        """Stochastic weight averaging: fold this epoch's weights into the running mean of the run's
        epochs (swa.keras), validate the mean, and keep it as best.keras when it scores best (returns
        its validation metrics and whether it did). VGG16 has no batch normalisation, so the mean
        needs no statistics update. ``metrics`` are this epoch's own: the mean of one epoch is it."""
        current = model.get_weights()
        avg = self.swa_avg
        n = int(self.state.get("swa_epochs", 0)) if avg is not None else 0  # no swa.keras: start the mean here
        self.state["swa_epochs"] = n + 1
        if n == 0:
            self.swa_avg = [w.copy() for w in current]
            save_checkpoint(model, self.run / "swa.keras")
            return metrics, False
        avg = [a + (w - a) / (n + 1) for a, w in zip(avg, current, strict=True)]
        self.swa_avg = avg
        model.set_weights(avg)
        log.info("epoch %d: validating the weight average of %d epochs", epoch + 1, n + 1)
        try:
            metrics = self.validate(model, size)
            save_checkpoint(model, self.run / "swa.keras")
            best = self._keep_if_best(model, metrics, epoch, size, "swa")
        finally:
            model.set_weights(current)
        return metrics, best


def _valid_partial(partial: object) -> bool:
    """``state.json``'s unfinished epoch: ``{"epoch": int >= 0, "steps": int >= 0}``."""
    return (isinstance(partial, dict) and all(isinstance(partial.get(k), int) and not isinstance(partial.get(k), bool)
                                              for k in ("epoch", "steps"))
            and partial["epoch"] >= 0 and partial["steps"] >= 0)


def _append_csv(path: Path, row: dict) -> None:
    """Add a row; a column that older rows lack (a run resumed by a newer version) is added empty."""
    rows: list[dict] = []
    fields = list(row)
    if path.is_file():
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            fields = list(reader.fieldnames or []) + [k for k in row if k not in (reader.fieldnames or [])]
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows([*rows, row])
    tmp.replace(path)


def plot_history(csv_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    ep = [int(r["epoch"]) for r in rows]
    has_age = any(r.get("val_age_mae") for r in rows)
    fig, axes = plt.subplots(1, 3 if has_age else 2, figsize=(15 if has_age else 10, 4))
    a1, a2 = axes[0], axes[1]
    a1.plot(ep, [float(r["loss"]) for r in rows], marker="o", label="train loss")
    a1.set_title("loss")
    for key, label in (("acc", "train (augmented)"), ("val_acc", "val"), ("val_masked_acc", "val masked")):
        a2.plot(ep, [float(r[key]) for r in rows], marker="o", label=label)
    a2.set_title("gender accuracy")
    if has_age:
        axes[2].plot(ep, [float(r["val_age_mae"]) for r in rows if r.get("val_age_mae")], marker="o",
                     label="val age MAE (years)")
        axes[2].set_title("apparent age")
    resumes = [int(r["epoch"]) for r in rows if r.get("resumed") == "1"]
    for ax in axes:
        # Readable for short runs: whole epochs on the axis, a margin around one or two points.
        ax.set_xlabel("epoch")
        ax.set_xlim(min(ep) - 0.5, max(ep) + 0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
        for i, x in enumerate(resumes):
            ax.axvline(x - 0.5, color="grey", linestyle=":", label="resumed" if i == 0 else None)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = png_path.with_name(png_path.stem + ".partial.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(png_path)


def train(cfg: TrainConfig, resume: bool = False, force: bool = False, stop_after: int = 0) -> dict:
    """Train (or go on with ``resume``); ``stop_after`` > 0 stops once that many epochs of the
    schedule are done, so a long schedule runs in stages that each fit a session."""
    return Trainer(cfg, resume, force).fit(resume, stop_after)

