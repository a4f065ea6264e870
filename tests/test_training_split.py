"""The seeded, stratified train/val/test split keeps duplicates together."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest

from training.split import FRACTIONS, age_band, assign_splits

RACES = ("White", "Black", "Asian", "Indian", "Others")


@dataclass
class Row:
    gender: str
    age: int | str
    race: str
    group: str
    split: str = ""


def make_rows(n: int = 3000, female_share: float = 0.35, seed: int = 0) -> list[Row]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        gender = "female" if rng.random() < female_share else "male"
        rows.append(Row(gender, int(rng.integers(1, 90)), RACES[int(rng.integers(0, 5))], f"img{i}"))
    return rows


def splits(rows: list[Row]) -> list[str]:
    return [r.split for r in rows]


def test_every_row_gets_a_split() -> None:
    rows = make_rows(500)
    assign_splits(rows)
    assert set(splits(rows)) == {"train", "val", "test"}


def test_same_seed_same_split_other_seed_other_split() -> None:
    a, b, c = make_rows(), make_rows(), make_rows()
    assign_splits(a, seed=7)
    assign_splits(b, seed=7)
    assign_splits(c, seed=8)
    assert splits(a) == splits(b)
    assert splits(a) != splits(c)


def test_split_does_not_depend_on_row_order() -> None:
    rows = make_rows(800)
    shuffled = [Row(r.gender, r.age, r.race, r.group) for r in reversed(rows)]
    assign_splits(rows)
    assign_splits(shuffled)
    assert {r.group: r.split for r in rows} == {r.group: r.split for r in shuffled}


def test_sizes_match_fractions() -> None:
    rows = make_rows()
    assign_splits(rows)
    counts = Counter(splits(rows))
    for split, fraction in FRACTIONS.items():
        assert counts[split] / len(rows) == pytest.approx(fraction, abs=0.02)
    assert counts["train"] / len(rows) == pytest.approx(1 - sum(FRACTIONS.values()), abs=0.03)


def test_gender_proportions_equal_across_splits() -> None:
    rows = make_rows(female_share=0.35)
    assign_splits(rows)
    for split in ("train", "val", "test"):
        members = [r for r in rows if r.split == split]
        share = sum(r.gender == "female" for r in members) / len(members)
        assert share == pytest.approx(0.35, abs=0.03), split


def test_strata_are_split_separately() -> None:
    # A small stratum of its own still gets its share of test and val.
    rows = make_rows(1000) + [Row("female", 70, "Pacific", f"rare{i}") for i in range(20)]
    assign_splits(rows)
    rare = Counter(r.split for r in rows if r.group.startswith("rare"))
    assert rare["test"] == round(20 * FRACTIONS["test"])
    assert rare["val"] == round(20 * FRACTIONS["val"])


def test_duplicate_groups_land_on_one_side() -> None:
    rows = make_rows(1000)
    # 60 groups of three byte-identical copies; copies may carry different ages.
    for g in range(60):
        for k in range(3):
            rows.append(Row("male" if g % 2 else "female", 20 + 10 * k, RACES[g % 5], f"dup{g}"))
    assign_splits(rows)
    by_group: dict[str, set[str]] = {}
    for r in rows:
        by_group.setdefault(r.group, set()).add(r.split)
    assert all(len(s) == 1 for s in by_group.values())
    assert {next(iter(s)) for g, s in by_group.items() if g.startswith("dup")} == {"train", "val", "test"}


@pytest.mark.parametrize(("age", "band"), [(0, "0-12"), (12, "0-12"), (13, "13-19"), ("35", "30-39"),
                                           (60, "60+"), (116, "60+"), ("", "unknown"), (None, "unknown")])
def test_age_band(age: int | str | None, band: str) -> None:
    assert age_band(age) == band
