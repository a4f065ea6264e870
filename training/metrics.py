"""Classification metrics shared by export and evaluate (no TensorFlow here)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from realtime.classifier import in_band

from .split import age_band

MIN_FACES_PER_CLASS = 200  # fewer validation faces of a class: recalls too noisy to move the threshold


def choose_threshold(y: np.ndarray, p: np.ndarray, min_per_class: int = MIN_FACES_PER_CLASS) -> float:
    """The threshold that makes female and male recall closest (ties: best accuracy).

    With fewer than ``min_per_class`` examples of either class it stays at 0.5: on a small
    validation split each face moves a recall by several points, and equalising such noisy
    recalls drives the threshold to an extreme (seen: 0.1 from 30 faces a class) that costs
    accuracy on new faces.
    """
    if min(int((y == 1).sum()), int((y == 0).sum())) < min_per_class:
        return 0.5
    best, best_key = 0.5, (2.0, 0.0)
    for t in np.linspace(0.05, 0.95, 181):
        pred = p >= t
        rf, rm = pred[y == 1].mean(), (~pred[y == 0]).mean()
        key = (abs(rf - rm), -((pred == y).mean()))
        if key < best_key:
            best, best_key = float(t), key
    return round(best, 3)


def metrics(y: np.ndarray, p: np.ndarray, threshold: float, band: tuple[float, float] | None = None) -> dict:
    pred = p >= threshold
    out = {
        "n": len(y),
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "recall_female": float(pred[y == 1].mean()) if (y == 1).any() else float("nan"),
        "recall_male": float((~pred[y == 0]).mean()) if (y == 0).any() else float("nan"),
    }
    out["balanced_accuracy"] = (out["recall_female"] + out["recall_male"]) / 2
    if band:
        out["uncertain"] = float(in_band(p, band).mean()) if len(y) else 0.0
    return out


def paired_gain(y: np.ndarray, correct_new: Sequence[np.ndarray], correct_old: Sequence[np.ndarray],
                rounds: int = 2000, seed: int = 0) -> dict:
    """How much better one model is than another on the same faces, with a paired bootstrap.

    ``correct_*`` hold one boolean array per condition (e.g. plain and masked), True where the model
    labels ``y`` right; the score is the mean over conditions of the balanced accuracy. Each of
    ``rounds`` resamples draws the faces once and scores both models on them, so the interval holds
    the noise of which faces happen to be in the split, not each model's separately.
    """
    female = np.asarray(y) == 1
    idx = np.random.default_rng(seed).integers(0, len(female), size=(rounds, len(female)))
    fem = female[idx]
    n_f, n_m = np.maximum(fem.sum(1), 1), np.maximum((~fem).sum(1), 1)

    def score(correct: Sequence[np.ndarray]) -> np.ndarray:
        per = []
        for c in correct:
            right = c[idx]
            per.append(((right & fem).sum(1) / n_f + (right & ~fem).sum(1) / n_m) / 2)
        return np.mean(per, axis=0)

    def point(correct: Sequence[np.ndarray]) -> float:
        return float(np.mean([(c[female].mean() + c[~female].mean()) / 2 for c in correct]))

    diff = score(correct_new) - score(correct_old)
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return {"gain": round(point(correct_new) - point(correct_old), 4),
            "ci95": [round(float(lo), 4), round(float(hi), 4)],
            "p_not_better": round(float((diff <= 0).mean()), 4), "rounds": rounds}


def group_table(rows: Sequence[dict], p: np.ndarray, threshold: float, positive: str = "female") -> list[dict]:
    """Accuracy per gender x age band x race; ``rows[i]`` (gender, age, race) goes with ``p[i]``."""
    cells: dict[tuple[str, str, str], list[bool]] = defaultdict(list)
    for row, prob in zip(rows, p, strict=True):
        key = (row["gender"], age_band(row["age"]), row.get("race") or "unknown")
        cells[key].append(bool((prob >= threshold) == (row["gender"] == positive)))
    return [{"gender": g, "age_band": a, "race": r, "n": len(v), "accuracy": float(np.mean(v))}
            for (g, a, r), v in sorted(cells.items())]


RELIABILITY_BINS = 10


def reliability(y: np.ndarray, p: np.ndarray, bins: int = RELIABILITY_BINS) -> tuple[list[dict], float]:
    """Equal-width bins of ``p_female`` vs the observed female share, and the expected calibration error."""
    index = np.minimum((p * bins).astype(int), bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        sel = index == b
        if not sel.any():
            continue
        mean_p, share = float(p[sel].mean()), float(y[sel].mean())
        rows.append({"lo": b / bins, "hi": (b + 1) / bins, "n": int(sel.sum()), "mean_p": mean_p,
                     "female_share": share})
        ece += sel.sum() / len(p) * abs(mean_p - share)
    return rows, float(ece)


def fit_temperature(y: np.ndarray, p: np.ndarray) -> float:
    """The temperature T that minimises the log loss of ``sigmoid(logit(p) / T)`` (grid search)."""
    from realtime.classifier import calibrate

    best_t, best_loss = 1.0, np.inf
    for t in np.exp(np.linspace(np.log(0.25), np.log(8.0), 121)):
        q = np.clip(calibrate(p, float(t)).astype(np.float64), 1e-7, 1 - 1e-7)
        loss = -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
        if loss < best_loss - 1e-12:
            best_t, best_loss = float(t), loss
    return round(best_t, 4)


def band_for_share(p: np.ndarray, threshold: float, share: float) -> tuple[float, float]:
    """The narrowest band ``[threshold - w, threshold + w)`` that holds at least ``share`` of ``p``
    (w in steps of 0.005, clipped to 0..1)."""
    for w in np.arange(0.0, 0.5001, 0.005):
        lo, hi = max(0.0, threshold - w), min(1.0, threshold + w)
        if in_band(p, (lo, hi)).mean() >= share:
            return round(float(lo), 3), round(float(hi), 3)
    return 0.0, 1.0


def age_metrics(true_age: np.ndarray, pred_age: np.ndarray, child_age: float) -> dict:
    """Apparent-age error overall and by age band, and how the child gate sorts people."""
    from .split import AGE_BANDS

    err = np.abs(pred_age - true_age)
    child = true_age < child_age
    gated = pred_age < child_age
    return {
        "n": int(len(true_age)),
        "mae": float(err.mean()) if len(err) else None,
        "mae_by_band": [{"age_band": name, "n": int(sel.sum()), "mae": float(err[sel].mean())}
                        for lo, hi, name in AGE_BANDS
                        if (sel := (true_age >= lo) & (true_age <= hi)).any()],
        "child_age": child_age,
        "children": int(child.sum()),
        "children_gated": float(gated[child].mean()) if child.any() else None,
        "adults": int((~child).sum()),
        "adults_gated": float(gated[~child].mean()) if (~child).any() else None,
    }
