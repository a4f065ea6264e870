"""Accuracy vs speed of int8 models at several input sizes (to pick the shipped size), and of
whole-face vs upper-half models (the face region comes from each checkpoint's run config).

    python scripts/size_tradeoff.py --data data_cache/utkface128 \
        --model 64=runs/a/best.keras --model 96=runs/b/best.keras --model 128=runs/c/best.keras \
        --mask-templates DATA/mask_templates --json runs/size_tradeoff.json

Each checkpoint is converted to int8 at its size, scored on the validation split (ages >= 13,
plain and with synthetic masks; never the test split) and timed per face with LiteRT (batch 1,
``--threads`` threads) on this CPU. Prints a Markdown table.

``--cost-only SIZE=CHECKPOINT`` converts a checkpoint at SIZE and times it without scoring it: the
cost of an input size is the same for any weights, so a size whose cost already breaks a budget
needs no training to be ruled out. The first ``--model`` is the reference of the ``cost_ratio``
column.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realtime.classifier import GenderClassifier, ModelInfo
from realtime.cli import setup_logging
from realtime.errors import UserError
from realtime.machine import cpu_info

log = logging.getLogger("size_tradeoff")


def ms_per_face(clf: GenderClassifier, runs: int = 50) -> float:
    x = np.random.default_rng(0).integers(0, 255, (1, clf.input_size, clf.input_size, 3), dtype=np.uint8)
    for _ in range(5):
        clf.predict_crops(x)
    start = time.perf_counter()
    for _ in range(runs):
        clf.predict_crops(x)
    return (time.perf_counter() - start) / runs * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="prepared cache")
    p.add_argument("--model", action="append", required=True, metavar="SIZE=CHECKPOINT")
    p.add_argument("--cost-only", action="append", default=[], metavar="SIZE=CHECKPOINT",
                   help="convert at SIZE and time only (no accuracy): a size ruled out by its cost")
    p.add_argument("--mask-templates", help="MaskTheFace templates for the masked score")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rep-samples", type=int, default=200)
    p.add_argument("--timing-rounds", type=int, default=5,
                   help="rounds of timing, the models taking turns; each keeps its median (default 5)")
    p.add_argument("--json", type=Path, help="write the results here too")
    p.add_argument("--note", default="", help="how the checkpoints were trained (kept in the JSON)")
    args = p.parse_args(argv)
    setup_logging()
    with tempfile.TemporaryDirectory() as tmp:
        try:

            from training.data import load_cache
            from training.export import convert_int8, run_config
            from training.masks import load_templates
            from training.metrics import metrics
            from training.model import load_checkpoint, named_outputs, without_training_heads
            from training.train import eval_arrays

            cache = load_cache(Path(args.data))
            templates = load_templates(Path(args.mask_templates)) if args.mask_templates else []
            labels = cache.labels()
            val = cache.indices("val", min_age=13)
            rep_idx = np.random.default_rng(0).choice(cache.indices("train"), args.rep_samples, replace=False)
            rows, classifiers = [], []
            for spec, cost_only in [(s, False) for s in args.model] + [(s, True) for s in args.cost_only]:
                size_text, _, ckpt = spec.partition("=")
                if not size_text.isdigit() or not ckpt:
                    raise UserError(f"expected SIZE=CHECKPOINT, got {spec!r}")
                size = int(size_text)
                model = without_training_heads(load_checkpoint(ckpt))
                region = run_config(Path(ckpt)).get("face_region", "full")
                tflite = convert_int8(model, size, eval_arrays(cache, rep_idx, size, masked=False, region=region))
                path = Path(tmp) / f"m{len(rows)}.tflite"
                path.write_bytes(tflite)
                clf = GenderClassifier(path, num_threads=args.threads,
                                       info=ModelInfo(size, outputs=named_outputs(model)))
                row = {"name": f"{size} px, {region} face", "size": size, "region": region, "checkpoint": ckpt,
                       "size_mb": round(len(tflite) / 1e6, 1), "cost_only": cost_only}
                for tag, masked in () if cost_only else (("val", False), ("val_masked", True)):
                    x = eval_arrays(cache, val, size, masked=masked, templates=templates, region=region)
                    probs = np.concatenate([clf.predict_crops(x[i : i + 64].astype(np.uint8))
                                            for i in range(0, len(x), 64)])
                    m = metrics(labels[val], probs, 0.5)
                    row[f"{tag}_accuracy"] = round(m["accuracy"], 4)
                    row[f"{tag}_balanced"] = round(m["balanced_accuracy"], 4)
                rows.append(row)
                classifiers.append(clf)
                log.info("%s", row)
            # The models take turns over the rounds and each keeps its median, so none pays for going first.
            times: list[list[float]] = [[] for _ in classifiers]
            for _ in range(max(1, args.timing_rounds)):
                for k, clf in enumerate(classifiers):
                    times[k].append(ms_per_face(clf))
            for row, ms in zip(rows, times, strict=True):
                row["ms_per_face"] = round(float(np.median(ms)), 2)
                row["ms_per_face_rounds"] = [round(t, 3) for t in ms]
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    for r in rows:
        r["cost_ratio"] = round(r["ms_per_face"] / rows[0]["ms_per_face"], 2)
    result = {"cpu": cpu_info(), "threads": args.threads, "split": "val, ages >= 13", "rows": rows,
              "note": args.note}
    print(f"CPU: {result['cpu']['name']}, LiteRT int8, {args.threads} threads, batch 1; "
          f"accuracy on {result['split']}\n")
    print("| model | ms / face | x the first | model MB | val accuracy | val accuracy, masked |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        acc = " | ".join(f"{r[k]:.4f}" if k in r else "not scored" for k in ("val_accuracy", "val_masked_accuracy"))
        print(f"| {r['name']} | {r['ms_per_face']} | {r['cost_ratio']} | {r['size_mb']} | {acc} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
