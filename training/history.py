"""A training run's ``history.csv``: one row per epoch (read by ``train --resume`` and ``card``)."""

from __future__ import annotations

import csv
from pathlib import Path


def read_history(path: Path) -> list[dict[str, str]]:
    """The rows of a history.csv; ``ValueError`` (naming what is wrong) when it is not one."""
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        for row in rows:
            int(row["epoch"])
    except (UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError) as exc:
        raise ValueError(exc.__class__.__name__) from exc
    return rows
