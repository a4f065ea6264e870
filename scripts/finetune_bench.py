#!/usr/bin/env python3
"""Train on your own faces, measured: fine-tuned from the shipped model vs from scratch vs the
shipped model unchanged, on a user-sized folder of faces the shipped model never trained on.

    python scripts/finetune_bench.py --cache data_cache/utk192ctx \
        --json docs/measurements/finetune_own_faces.json

The "user" is simulated with UTKFace faces from the **test split** of the shipped model's data
(the split is a stable hash of each face's group, see ``training/split.py``, so training never saw
them): ``--per-class`` adults (age >= ``--min-age``) per gender become ``own/female`` and
``own/male``, a disjoint ``--test-per-class`` per gender become ``own_test/``. Then the README's
commands run exactly as a user types them (``prepare --folder own --test own_test``, ``train``
with ``--weights shipped`` or ``--weights none`` and the same ``--schedule``, ``export``,
``evaluate --data own_test``), and the three int8 models are scored on ``own_test``.
The JSON names the machine, the shipped model (file and SHA-256), the commands and the timings.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realtime.cli import positive_int, report_user_error, setup_logging
from realtime.errors import UserError
from realtime.files import open_output
from realtime.machine import cpu_info
from realtime.paths import GENDER_MODEL, REPO_ROOT

log = logging.getLogger("finetune_bench")
REPORT_KEYS = ("n", "accuracy", "balanced_accuracy", "recall_female", "recall_male", "uncertain", "no_face")


def pick_faces(meta_csv: Path, per_class: int, test_per_class: int, min_age: int,
               seed: int) -> dict[str, dict[str, list[Path]]]:
    """Disjoint own/own_test image lists per gender, drawn from the cache's test split (adults)."""
    pools: dict[str, list[Path]] = {"female": [], "male": []}
    groups: dict[str, set[str]] = {"female": set(), "male": set()}
    with meta_csv.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] != "test" or row["gender"] not in pools:
                continue
            if not row["age"].isdigit() or int(row["age"]) < min_age or row["group"] in groups[row["gender"]]:
                continue  # one image per duplicate group, so own and own_test never share a face
            groups[row["gender"]].add(row["group"])
            file = Path(row["file"])
            pools[row["gender"]].append(file if file.is_absolute() else REPO_ROOT / file)
    rng = np.random.default_rng(seed)
    picked: dict[str, dict[str, list[Path]]] = {"own": {}, "own_test": {}}
    for gender, pool in pools.items():
        need = per_class + test_per_class
        if len(pool) < need:
            raise UserError(f"{meta_csv}: only {len(pool)} {gender} adults in the test split, need {need}")
        order = rng.permutation(len(pool))
        picked["own"][gender] = [pool[i] for i in order[:per_class]]
        picked["own_test"][gender] = [pool[i] for i in order[per_class:need]]
    return picked


def copy_folders(picked: dict[str, dict[str, list[Path]]], work: Path) -> None:
    for folder, by_gender in picked.items():
        for gender, files in by_gender.items():
            out = work / folder / gender
            out.mkdir(parents=True, exist_ok=True)
            for src in files:
                if not src.is_file():
                    raise UserError(f"{src}: image of the cache not found (was the data moved?)")
                shutil.copyfile(src, out / src.name)


def training(*args: str) -> tuple[list[str], float]:
    """Run ``python -m training ARGS`` as a user would; the command line and its wall time."""
    cmd = [sys.executable, "-m", "training", *args]
    log.info("$ %s", " ".join(["python", "-m", "training", *args]))
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise UserError(f"{' '.join(args[:1])} failed ({proc.returncode}): {proc.stdout.strip().splitlines()[-1:]}")
    return ["python", "-m", "training", *args], round(time.perf_counter() - start, 1)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, required=True, help="the shipped model's prepared UTKFace cache "
                   "(its meta.csv gives the test split)")
    p.add_argument("--work", type=Path, default=REPO_ROOT / "runs" / "finetune_bench",
                   help="working folder, replaced (default runs/finetune_bench)")
    p.add_argument("--json", type=Path, required=True, help="measurement JSON to write")
    p.add_argument("--per-class", type=positive_int, default=300, help="own faces per gender (default 300)")
    p.add_argument("--test-per-class", type=positive_int, default=100,
                   help="disjoint test faces per gender (default 100)")
    p.add_argument("--schedule", default="64:8", help="training budget for both runs (default 64:8)")
    p.add_argument("--min-age", type=int, default=18, help="adults from this age (default 18)")
    p.add_argument("--seed", type=int, default=1, help="seed of the sample and of training (default 1)")
    args = p.parse_args(argv)
    setup_logging(False)
    try:
        meta = args.cache / "meta.csv"
        if not meta.is_file():
            raise UserError(f"{args.cache}: no meta.csv (give a cache made by `python -m training prepare`)")
        if args.work.exists():
            shutil.rmtree(args.work)
        picked = pick_faces(meta, args.per_class, args.test_per_class, args.min_age, args.seed)
        copy_folders(picked, args.work)
        own, own_test, cache = args.work / "own", args.work / "own_test", args.work / "cache"
        commands: list[list[str]] = []
        seconds: dict[str, float] = {}

        def step(name: str, *cmd: str) -> None:
            line, took = training(*cmd)
            commands.append(line)
            seconds[name] = took

        step("prepare", "prepare", "--folder", str(own), "--test", str(own_test), "--out", str(cache),
             "--data-name", f"UTKFace test-split sample ({args.per_class} + {args.per_class} adults)",
             "--data-licence", "UTKFace: non-commercial research only")
        models = {"shipped": GENDER_MODEL}
        for name, weights in (("fine-tuned", "shipped"), ("from scratch", "none")):
            run = args.work / name.replace(" ", "_")
            step(f"train {name}", "train", "--data", str(cache), "--run", str(run), "--weights", weights,
                 "--schedule", args.schedule, "--seed", str(args.seed))
            step(f"export {name}", "export", "--checkpoint", str(run / "best.keras"), "--data", str(cache),
                 "--size", args.schedule.split(":")[0], "--max-drop", "100")
            models[name] = run / "model_int8.tflite"
        results: dict[str, Any] = {}
        for name, model in models.items():
            report = args.work / f"eval_{name.replace(' ', '_')}.json"
            step(f"evaluate {name}", "evaluate", "--model", str(model), "--data", str(own_test),
                 "--report", str(report))
            r = json.loads(report.read_text())
            results[name] = {k: r.get(k) for k in REPORT_KEYS}
            results[name]["ms_per_face"] = r.get("ms_per_face")
        out = {
            "cpu": cpu_info(),
            "shipped_model": {"file": GENDER_MODEL.name, "sha256": sha256(GENDER_MODEL)},
            "data": {"source": "UTKFace test split (never used for training the shipped model)",
                     "own_per_class": args.per_class, "test_per_class": args.test_per_class,
                     "min_age": args.min_age, "seed": args.seed},
            "schedule": args.schedule,
            "commands": [shlex.join(c).replace(str(args.work), "WORK").replace(f"{REPO_ROOT}/", "")
                         for c in commands],
            "seconds": seconds,
            "results": results,
        }
        with open_output(args.json, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
        for name, r in results.items():
            log.info("%-13s accuracy %.1f %% (balanced %.1f %%, female %.1f %%, male %.1f %%, n %d)", name,
                     100 * r["accuracy"], 100 * r["balanced_accuracy"], 100 * r["recall_female"],
                     100 * r["recall_male"], r["n"])
        return 0
    except UserError as exc:
        return report_user_error(exc, False)


if __name__ == "__main__":
    raise SystemExit(main())
