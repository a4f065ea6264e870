"""A fixed, seeded split stratified by gender x age band x race, duplicates kept together."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

FRACTIONS = {"test": 0.15, "val": 0.10}  # the rest is train
SEED = 20261125
AGE_BANDS = ((0, 12, "0-12"), (13, 19, "13-19"), (20, 29, "20-29"), (30, 39, "30-39"),
             (40, 49, "40-49"), (50, 59, "50-59"), (60, 200, "60+"))


class _Row(Protocol):
    gender: str
    age: int | str
    race: str
    group: str
    split: str


def age_band(age: int | str | None) -> str:
    if age in (None, ""):
        return "unknown"
    a = int(age)
    for lo, hi, name in AGE_BANDS:
        if lo <= a <= hi:
            return name
    return "unknown"


def assign_splits(rows: Sequence[_Row], seed: int = SEED,
                  fractions: dict[str, float] | None = None) -> None:
    """Set ``row.split`` to train/val/test in place.

    All rows sharing a ``group`` (byte-identical duplicates) land in the same split. Groups are
    stratified by the (gender, age band, race) of their first row; within each stratum they are
    ordered by a seeded hash of the group id, and the first share goes to test, the next to
    validation, the rest to train. Ordering by hash (not a shuffle of the whole list) keeps the
    split stable: a face that one detector run finds and another misses moves at most the groups
    at a share's boundary in its own stratum, never the whole split.
    """
    fractions = fractions or FRACTIONS
    groups: dict[str, list[_Row]] = defaultdict(list)
    for row in rows:
        groups[row.group or str(id(row))].append(row)
    strata: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for gid, members in groups.items():
        first = members[0]
        strata[(first.gender, age_band(first.age), first.race or "")].append(gid)
    def order(gid: str) -> str:
        return hashlib.sha1(f"{seed}:{gid}".encode()).hexdigest()

    for key in sorted(strata):
        gids = sorted(strata[key], key=order)
        n = len(gids)
        n_test = int(round(n * fractions["test"]))
        n_val = int(round(n * fractions["val"]))
        for i, gid in enumerate(gids):
            split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
            for row in groups[gid]:
                row.split = split
