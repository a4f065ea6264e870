#!/usr/bin/env python3
"""How good each teacher is, and each way of combining them, on faces training never learns from.

    python scripts/teacher_table.py --data data_cache/utk192ctx --web ../shared/data/web_portraits \
        --json docs/measurements/teachers.json

Two sets: the **validation** split of a prepared cache (adults, the teachers' cached outputs from
``python -m training teach``; labels as given) and a folder of labelled portraits that are not
UTKFace (``--web``, female/ and male/; each photo goes through the runtime's still-image detector
and the largest face is used, as ``training evaluate`` does). Each row is a teacher or a
combination (mean of logits, ``training.distill.combine``); the score is balanced accuracy at
0.5, with both recalls. The combination that distillation uses is chosen from this table. The
JSON also keeps how many train and validation labels the teachers' label cleaning changes
(``training.distill.flagged_faces``) and what ``teach`` measured of each teacher (its check against
the reference outputs, ms per face). The test split is never read.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realtime.cli import run_script, setup_logging
from realtime.crop import DEFAULT_MARGIN, crop_face
from realtime.files import open_output
from realtime.machine import cpu_info

log = logging.getLogger("teacher_table")
CONTEXT = 1.5
WINDOW = 192


def scores(y_female: np.ndarray, p_female: np.ndarray) -> dict[str, float]:
    pred = p_female >= 0.5
    rf = float(pred[y_female == 1].mean())
    rm = float((~pred[y_female == 0]).mean())
    return {"balanced_accuracy": round((rf + rm) / 2, 4), "recall_female": round(rf, 4),
            "recall_male": round(rm, 4), "n": len(y_female)}


def table(y: np.ndarray, p_f: dict[str, np.ndarray]) -> dict[str, dict]:
    from training.distill import combine

    rows = {name: scores(y, p) for name, p in p_f.items()}
    names = list(p_f)
    for k in range(2, len(names) + 1):
        for combo in itertools.combinations(names, k):
            rows["mean(" + "+".join(combo) + ")"] = scores(y, combine({n: p_f[n] for n in combo}))
    return rows


def val_outputs(data: Path, teachers: tuple[str, ...]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    from training.data import load_cache
    from training.distill import load_teacher_outputs

    cache = load_cache(data)
    idx = cache.indices("val", min_age=13)
    _, p_f = load_teacher_outputs(cache, data / "teachers", teachers)
    return cache.labels()[idx], {n: p[idx] for n, p in p_f.items()}


def label_cleaning(data: Path, threshold: float = 0.9) -> dict:
    """How many train and val labels the cleaning rule flips (all ages, and adults)."""
    from training.data import load_cache
    from training.distill import CLEANING_TEACHERS, flagged_faces, load_teacher_outputs

    cache = load_cache(data)
    _, p_f = load_teacher_outputs(cache, data / "teachers", CLEANING_TEACHERS)
    flags = flagged_faces(cache.labels(), p_f, threshold)
    out: dict = {"teachers": list(CLEANING_TEACHERS), "threshold": threshold, "changed": {}, "changed_adults": {},
                 "faces": {}}
    for split in ("train", "val"):
        idx, adults = cache.indices(split), cache.indices(split, min_age=13)
        out["faces"][split] = int(len(idx))
        out["changed"][split] = int(flags[idx].sum())
        out["changed_adults"][split] = int(flags[adults].sum())
    return out


def web_outputs(folder: Path, teachers_dir: Path, names: tuple[str, ...], model: str
                ) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    from realtime.crop import largest_box
    from realtime.face_detector import StillImageDetector
    from realtime.sources import read_image
    from training.data import context_margin, folder_items
    from training.teach import build_teachers, run_teacher

    items = folder_items(folder)
    teachers = build_teachers(list(names), teachers_dir, model, threads=2)
    windows, labels, no_face = [], [], 0
    margin = context_margin(DEFAULT_MARGIN, CONTEXT)
    with StillImageDetector() as detector:
        for item in items:
            image = read_image(item.path)
            if image is None:
                continue
            faces = detector.detect(image)
            best = largest_box([f.box for f in faces])
            if best is None:
                no_face += 1
                continue
            windows.append(crop_face(image, faces[best].crop_box, WINDOW, margin))
            labels.append(1 if item.gender == "female" else 0)
    x = np.stack(windows)
    p_f = {}
    for name, teacher in teachers.items():
        out = [run_teacher(teacher, x[i:i + 32], CONTEXT, DEFAULT_MARGIN, round(WINDOW / CONTEXT))
               for i in range(0, len(x), 32)]
        p_f[name] = 1.0 - np.concatenate([o.p_male for o in out])
    return np.array(labels), p_f, no_face


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="prepared cache with teachers/ (from `teach`)")
    parser.add_argument("--web", help="female/ + male/ portraits that are not UTKFace")
    parser.add_argument("--teachers", default="data_cache/teachers", help="the npm teachers' folder")
    parser.add_argument("--model", default="shipped", help="the model used as the fourth teacher")
    parser.add_argument("--json", required=True, help="where to write the table")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    names = ("faceres", "agegender", "cydral", "shipped")
    y, p_f = val_outputs(Path(args.data), names)
    result: dict = {"cpu": cpu_info(), "teachers": list(names),
                    "val": {"set": f"{args.data} validation split, ages >= 13, labels as given",
                            "rows": table(y, p_f)},
                    "label_cleaning": label_cleaning(Path(args.data))}
    teach_json = Path(args.data) / "teachers" / "teachers.json"
    if teach_json.is_file():
        teach = json.loads(teach_json.read_text())
        result["teach"] = {name: {k: t.get(k) for k in ("ms_per_face", "reference_max_diff")}
                           for name, t in teach.get("teachers", {}).items()}
    if args.web:
        yw, pw, no_face = web_outputs(Path(args.web), Path(args.teachers), names, args.model)
        result["web"] = {"set": f"{Path(args.web).name}: largest detected face per photo ({no_face} without "
                                "a face left out)", "rows": table(yw, pw)}
    with open_output(Path(args.json), "w") as fh:
        json.dump(result, fh, indent=2)
    for key in ("val", "web"):
        if key in result:
            best = sorted(result[key]["rows"].items(), key=lambda kv: -kv[1]["balanced_accuracy"])[:6]
            log.info("%s: %s", key, "; ".join(f"{k} {v['balanced_accuracy']:.4f}" for k, v in best))
    return 0


if __name__ == "__main__":
    run_script(main)
