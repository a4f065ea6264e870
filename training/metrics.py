"""Classification metrics shared by export and evaluate (no TensorFlow here)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from .split import age_band


def choose_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold that makes female and male recall closest (ties: best accuracy)."""
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
        out["uncertain"] = float(((p >= band[0]) & (p < band[1])).mean()) if len(y) else 0.0
    return out


def group_table(rows: Sequence[dict], p: np.ndarray, threshold: float, positive: str = "female") -> list[dict]:
    """Accuracy per gender x age band x race; ``rows[i]`` (gender, age, race) goes with ``p[i]``."""
    cells: dict[tuple[str, str, str], list[bool]] = defaultdict(list)
    for row, prob in zip(rows, p, strict=True):
        key = (row["gender"], age_band(row["age"]), row.get("race") or "unknown")
        cells[key].append(bool((prob >= threshold) == (row["gender"] == positive)))
    return [{"gender": g, "age_band": a, "race": r, "n": len(v), "accuracy": float(np.mean(v))}
            for (g, a, r), v in sorted(cells.items())]
