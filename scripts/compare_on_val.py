#!/usr/bin/env python3
"""Which model to ship: int8 models scored on a prepared cache's **validation** split, never the test.

    python scripts/compare_on_val.py --data data_cache/utk192ctx \
        --model models/gender_vgg16_int8.tflite --model runs/v2/model_int8.tflite \
        --mask-templates DATA/mask_templates --json docs/measurements/ship_decision.json

Each model runs through the runtime's own classifier with its own metadata (input size, face
region, flip averaging, calibration, threshold), on the adults of the validation split (age >=
``--min-age``), once plain and once with the exporter's fixed synthetic mask per face. The score is
the mean of the two balanced accuracies, the same score training selects epochs by. Each model
after the first is compared with the one listed before it (``--vs first``: with the first, for an
ablation against one baseline) on the same faces (a paired bootstrap: the score gain with its 95 %
interval): a gain whose interval holds 0 is noise, not a better model. ``--label`` names each model
(what was changed) in the JSON.
Each model is also timed per face (batch 1, mean over ``--timed-faces`` validation faces, its own
flip averaging included; the models take turns over ``--timing-rounds`` rounds and each keeps its
median, so no model pays for being timed first) and compared with the first model's time. The JSON
names the CPU, each model's file and SHA-256, and the best score.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realtime.classifier import GenderClassifier, ModelInfo
from realtime.cli import report_user_error, setup_logging
from realtime.errors import UserError
from realtime.files import open_output
from realtime.machine import cpu_info

log = logging.getLogger("compare_on_val")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="prepared cache (python -m training prepare)")
    p.add_argument("--model", type=Path, action="append", required=True, help=".tflite model (repeatable)")
    p.add_argument("--mask-templates", default="bundled", help="templates for the masked score (default bundled)")
    p.add_argument("--label", action="append", default=[],
                   help="what each model is (repeat once per --model, in order; stored in the JSON)")
    p.add_argument("--vs", choices=("previous", "first"), default="previous",
                   help="compare each model with the one before it (default) or with the first")
    p.add_argument("--min-age", type=int, default=13, help="adults from this age (default 13)")
    p.add_argument("--threads", type=int, default=2, help="classifier threads (default 2)")
    p.add_argument("--timed-faces", type=int, default=200, help="faces timed per model (default 200)")
    p.add_argument("--timing-rounds", type=int, default=5,
                   help="rounds of timing, the models taking turns; each keeps its median (default 5)")
    p.add_argument("--json", type=Path, help="write the comparison here")
    p.add_argument("--title", default="", help="what the comparison is about (stored in the JSON)")
    p.add_argument("--note", default="", help="how the candidates were made and what was decided (stored in the JSON)")
    args = p.parse_args(argv)
    setup_logging(False)
    try:
        if args.label and len(args.label) != len(args.model):
            raise UserError(f"give one --label per --model ({len(args.model)}), got {len(args.label)}")
        import numpy as np

        from training.data import load_cache
        from training.export import ms_per_face, predict_int8
        from training.masks import load_templates, resolve_templates
        from training.metrics import metrics, paired_gain
        from training.train import eval_arrays

        cache = load_cache(args.data)
        templates = load_templates(resolve_templates(args.mask_templates))
        val = cache.indices("val", min_age=args.min_age)
        y = cache.labels()[val]
        rows: list[dict] = []
        correct: list[list[np.ndarray]] = []
        timed: list[tuple[Path, ModelInfo, np.ndarray]] = []
        pick = np.random.default_rng(1).choice(len(val), size=min(args.timed_faces, len(val)), replace=False)
        for k, path in enumerate(args.model):
            clf = GenderClassifier(path, num_threads=args.threads)
            info = clf.info
            row: dict = {"model": str(path), **({"label": args.label[k]} if args.label else {}),
                         "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                         "input_size": info.input_size, "threshold": info.threshold,
                         "flip_average": info.flip_average}
            correct.append([])
            for tag, masked in (("val", False), ("val_masked", True)):
                x = eval_arrays(cache, val, info.input_size, masked=masked, templates=templates,
                                region=info.face_region)
                if not masked:
                    timed.append((path, info, x[pick].astype(np.uint8)))
                p_female = predict_int8(path, info, x, args.threads)
                correct[-1].append((p_female >= info.threshold) == (y == 1))
                m = metrics(y, p_female, info.threshold)
                row[tag] = {k: round(float(m[k]), 4) for k in ("accuracy", "balanced_accuracy", "recall_female",
                                                                "recall_male")}
            row["score"] = round((row["val"]["balanced_accuracy"] + row["val_masked"]["balanced_accuracy"]) / 2, 4)
            if rows:  # row "vs_previous" or "vs_first": the gain against that model on the same faces
                ref = 0 if args.vs == "first" else len(rows) - 1
                row[f"vs_{args.vs}"] = {"model": rows[ref]["model"], **paired_gain(y, correct[-1], correct[ref])}
            rows.append(row)
        times: list[list[float]] = [[] for _ in timed]
        for _ in range(max(1, args.timing_rounds)):
            for k, (path, info, crops) in enumerate(timed):
                times[k].append(ms_per_face(path, info, args.threads, crops))
        for row, ms in zip(rows, times, strict=True):
            row["ms_per_face"] = round(float(np.median(ms)), 3)
            row["ms_per_face_rounds"] = [round(t, 3) for t in ms]
            row["ms_vs_first"] = round(row["ms_per_face"] / rows[0]["ms_per_face"], 3)
            gain = row.get(f"vs_{args.vs}")
            log.info("%s: val %.4f, masked %.4f, score %.4f%s, %.2f ms per face (%.2fx the first)", row["model"],
                     row["val"]["accuracy"], row["val_masked"]["accuracy"], row["score"],
                     f" ({gain['gain']:+.4f} vs {gain['model']}, 95 % interval {gain['ci95']})" if gain else "",
                     row["ms_per_face"], row["ms_vs_first"])
        best = max(rows, key=lambda r: r["score"])
        result = {"cpu": cpu_info(), "data": str(args.data), "split": f"val, ages >= {args.min_age}",
                  "n": int(len(val)), "models": rows, "best": best["model"],
                  **({"title": args.title} if args.title else {}), **({"note": args.note} if args.note else {})}
        log.info("best on validation: %s", best["model"])
        if args.json:
            with open_output(args.json, "w") as f:
                json.dump(result, f, indent=1)
                f.write("\n")
        return 0
    except UserError as exc:
        return report_user_error(exc, False)


if __name__ == "__main__":
    raise SystemExit(main())
