#!/usr/bin/env python3
"""Score models on a labelled folder that is not UTKFace (female/ and male/), through the product path.

    python scripts/score_folder.py --data ../shared/data/web_portraits \
        --model runs/v2_int8.tflite --model models/gender_vgg16_int8.tflite \
        --label "model v2" --label "a candidate" --json docs/measurements/distill_web.json

Each photo goes through the runtime's still-image detector and the largest face is classified by
each model with its own metadata (``training evaluate``'s path). Scores at the model's threshold:
balanced accuracy and both recalls by the side of the threshold (as ``training evaluate``), their
gap, the share of ``uncertain`` faces, and the balanced accuracy counting ``uncertain`` as wrong
(what a user sees). Each model after the first is compared with the first on the same photos
(paired bootstrap of the balanced accuracy). The JSON keeps
no file names, only counts and scores, and names the CPU and each model's SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realtime.cli import run_script, setup_logging
from realtime.files import open_output
from realtime.machine import cpu_info

log = logging.getLogger("score_folder")


def answers(model: Path, data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per readable photo: truth (female?), the answer a user sees (1 female, 0 male, -1 uncertain)
    and the side of the threshold; and how many had no face (then the whole photo is classified,
    as ``training evaluate`` does)."""
    from realtime.classifier import GenderClassifier
    from realtime.face_detector import StillImageDetector
    from training.evaluate import classify_all, list_images

    clf = GenderClassifier(model, num_threads=2, max_batch=16)
    with StillImageDetector() as detector:
        results = classify_all(list_images(data), clf, detector, {}, 16)
    truth = np.array([f.gender == "female" for f in results.faces])
    p = np.array([f.p_female for f in results.faces])
    lo, hi = clf.info.uncertain_band
    ans = np.where((p >= lo) & (p < hi), -1, (p >= clf.info.threshold).astype(int))
    side = (p >= clf.info.threshold).astype(int)
    return truth, ans, side, sum(not f.found for f in results.faces)


def scores(truth: np.ndarray, ans: np.ndarray, side: np.ndarray) -> dict:
    """``side``: the label at the threshold (1 female); ``ans``: what a user sees (-1 uncertain)."""
    rf, rm = float((side[truth] == 1).mean()), float((side[~truth] == 0).mean())
    sf, sm = float((ans[truth] == 1).mean()), float((ans[~truth] == 0).mean())
    return {"n": int(len(truth)), "balanced_accuracy": round((rf + rm) / 2, 4), "recall_female": round(rf, 4),
            "recall_male": round(rm, 4), "gap_female_minus_male": round(rf - rm, 4),
            "uncertain": round(float((ans == -1).mean()), 4),
            "balanced_accuracy_uncertain_wrong": round((sf + sm) / 2, 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with female/ and male/ photos")
    parser.add_argument("--model", action="append", required=True, help=".tflite model (repeat to compare)")
    parser.add_argument("--label", action="append", default=[],
                        help="what each model is (repeat once per --model, in order; stored in the JSON)")
    parser.add_argument("--json", required=True, help="where to write the scores")
    args = parser.parse_args(argv)
    setup_logging(False)
    if args.label and len(args.label) != len(args.model):
        parser.error(f"give one --label per --model ({len(args.model)}), got {len(args.label)}")
    from training.metrics import paired_gain

    rows, first = [], None
    for k, name in enumerate(args.model):
        model = Path(name)
        truth, ans, side, no_face = answers(model, Path(args.data))
        row = {"model": model.name, "path": name, **({"label": args.label[k]} if args.label else {}),
               "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
               "no_face": no_face, **scores(truth, ans, side)}
        correct = side == truth.astype(int)
        if first is not None:
            row["vs_first"] = paired_gain(truth.astype(int), [correct], [first])
        else:
            first = correct
        rows.append(row)
        log.info("%s: balanced %.4f (F %.4f, M %.4f), uncertain %.3f", name, row["balanced_accuracy"],
                 row["recall_female"], row["recall_male"], row["uncertain"])
    out = {"command": "python scripts/score_folder.py --data DIR " + " ".join(f"--model {m}" for m in args.model),
           "data": Path(args.data).name, "rows": rows, "cpu": cpu_info()}
    with open_output(Path(args.json), "w") as fh:
        json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    run_script(main)
