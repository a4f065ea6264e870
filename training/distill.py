"""Distillation targets from cached teacher outputs (``python -m training teach``).

For every crop of a prepared cache, :func:`build_targets` turns the teachers' outputs into what
the student learns from:

* a soft gender target: ``teacher_weight`` x the teachers' combined p(female) + the rest x the
  (cleaned) label (with ``mix="agreement"`` that weight shrinks on faces where the teachers
  disagree with each other). Teachers are combined as the mean of their logits, each divided by its
  temperature (1 = as the teacher says);
* the faceres 1024-d face feature (cosine loss through the student's training-only ``feature``
  head);
* an age target: the label's age where the data has one, the teachers' mean age otherwise.

Label cleaning: a face whose label both faceres and the Cydral network contradict, each with
p >= ``clean_threshold``, is *teacher-flagged* (AgeGenderNet, which was trained on UTKFace, is not
asked). Flagged faces of the train and val splits get the teachers' label; the test split keeps its
labels (the headline figures), and export reports a second line without the flagged test faces.
The targets are computed on the clean crop; the student sees masked, blurred, small and re-framed
versions of it, so what the teachers know of the clean face is taught for the hard versions too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from realtime.errors import UserError

from .data import Cache
from .teach import TeacherCache

log = logging.getLogger(__name__)

DEFAULT_TEACHERS = ("faceres", "agegender", "cydral", "shipped")
CLEANING_TEACHERS = ("faceres", "cydral")  # AgeGenderNet saw most of UTKFace in training
AGE_TEACHERS = ("faceres", "agegender", "cydral", "shipped")
EPS = 1e-4
MIXES = ("fixed", "agreement")  # how the teachers' share of the gender target is set per face


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


def combine(p_female: dict[str, np.ndarray], temperatures: dict[str, float] | None = None) -> np.ndarray:
    """Mean of the teachers' logits (each divided by its temperature), as a probability."""
    temperatures = temperatures or {}
    z = np.mean([_logit(p) / temperatures.get(name, 1.0) for name, p in p_female.items()], axis=0)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def flagged_faces(labels_female: np.ndarray, teacher_p_female: dict[str, np.ndarray], threshold: float) -> np.ndarray:
    """Faces whose label every cleaning teacher contradicts with p >= ``threshold``."""
    flags = np.ones(len(labels_female), bool)
    for name in CLEANING_TEACHERS:
        p = teacher_p_female[name]
        against = np.where(labels_female == 1, 1.0 - p, p)
        flags &= np.isfinite(p) & (against >= threshold)
    return flags


@dataclass
class Targets:
    """What the student learns from, one row per cache crop."""

    labels: np.ndarray  # cleaned hard labels, 1 = female (test split: as given)
    p_female: np.ndarray  # soft gender targets
    age: np.ndarray  # years (NaN: unknown)
    feature: np.ndarray | None = None  # N x D teacher face features (float16), or None
    flagged: np.ndarray | None = None  # teacher-flagged faces (all splits)
    report: dict = field(default_factory=dict)


def plain_targets(cache: Cache) -> Targets:
    labels = cache.labels()
    return Targets(labels, labels.astype(np.float32), cache.ages())


def load_teacher_outputs(cache: Cache, folder: Path, names: tuple[str, ...]) -> tuple[TeacherCache, dict]:
    tc = TeacherCache(folder, len(cache.meta))
    missing = [n for n in names if not tc.has(n)]
    if missing:
        raise UserError(f"{folder}: no complete outputs of teacher(s) {', '.join(missing)}; run "
                        f"`python -m training teach --data {folder.parent}`")
    return tc, {n: 1.0 - tc.p_male(n) for n in names}


def build_targets(cache: Cache, folder: Path, teachers: tuple[str, ...] = DEFAULT_TEACHERS,
                  teacher_weight: float = 0.7, temperatures: dict[str, float] | None = None,
                  clean: str = "flip", clean_threshold: float = 0.9, feature: bool = True,
                  mix: str = "fixed") -> Targets:
    """Distillation targets for every crop of ``cache`` from the teacher outputs in ``folder``.

    ``mix``: ``fixed`` gives every face ``teacher_weight`` × the teachers' combined p(female) +
    the rest × the label; ``agreement`` scales that weight per face by how much the teachers agree
    (1 − the spread between the highest and lowest teacher p(female)), so where they disagree with
    each other the label decides."""
    if not 0.0 <= teacher_weight <= 1.0:
        raise UserError(f"--teacher-weight must be in [0, 1], got {teacher_weight}")
    if mix not in MIXES:
        raise UserError(f"--teacher-mix must be one of {', '.join(MIXES)}, got {mix!r}")
    if clean not in ("flip", "off"):
        raise UserError(f"--clean-labels must be flip or off, got {clean!r}")
    names = tuple(dict.fromkeys((*teachers, *(CLEANING_TEACHERS if clean != "off" else ()))))
    tc, p_f = load_teacher_outputs(cache, folder, names)
    labels = cache.labels().copy()
    splits = np.array([r["split"] for r in cache.meta])
    flags = flagged_faces(labels, p_f, clean_threshold) if clean != "off" else np.zeros(len(labels), bool)
    change = flags & (splits != "test")
    labels[change] = 1 - labels[change]
    soft = combine({n: p_f[n] for n in teachers}, temperatures)
    weight = np.full(len(labels), teacher_weight, np.float32)
    if mix == "agreement":
        stacked = np.stack([p_f[n] for n in teachers])
        weight = teacher_weight * (1.0 - (stacked.max(axis=0) - stacked.min(axis=0)))
    target = (weight * soft + (1.0 - weight) * labels).astype(np.float32)
    ages = cache.ages()
    teacher_age = np.nanmean(np.stack([tc.age(n) for n in AGE_TEACHERS if tc.has(n)]), axis=0) \
        if any(tc.has(n) for n in AGE_TEACHERS) else np.full(len(ages), np.nan, np.float32)
    age = np.where(np.isfinite(ages), ages, teacher_age).astype(np.float32)
    feat = None
    if feature:
        if not tc.has("faceres"):
            raise UserError(f"{folder}: the feature loss needs the faceres teacher's outputs")
        feat = tc.feature()
    report = {
        "teachers": list(teachers), "teacher_weight": teacher_weight, "teacher_mix": mix,
        "mean_teacher_weight": float(weight.mean()), "temperatures": temperatures or {},
        "clean": clean, "clean_threshold": clean_threshold, "cleaning_teachers": list(CLEANING_TEACHERS),
        "flagged": {s: int((flags & (splits == s)).sum()) for s in ("train", "val", "test")},
        "labels_changed": {s: int((change & (splits == s)).sum()) for s in ("train", "val")},
    }
    log.info("distillation targets: teachers %s (weight %.2f), labels flipped where %s agree at p >= %.2f: "
             "%s", ", ".join(teachers), teacher_weight, " and ".join(CLEANING_TEACHERS), clean_threshold,
             report["labels_changed"])
    return Targets(labels, target, age, feat, flags, report)


def teacher_flags(cache: Cache, folder: Path, threshold: float = 0.9) -> np.ndarray | None:
    """Teacher-flagged faces of ``cache`` (see :func:`flagged_faces`), or None without the cleaning
    teachers' cached outputs."""
    tc = TeacherCache(folder, len(cache.meta))
    if not all(tc.has(n) for n in CLEANING_TEACHERS):
        return None
    return flagged_faces(cache.labels(), {n: 1.0 - tc.p_male(n) for n in CLEANING_TEACHERS}, threshold)
