"""Train, export and check the gender model; sort and review labelled folders.

  prepare   detect and crop faces (runtime detector + realtime/crop.py) into a cache, with a split
  train     VGG16 on a prepared cache; checkpoints every epoch, --resume
  export    full-integer int8 TFLite + metadata, with a float-vs-int8 parity check
  evaluate  metrics of a .tflite model on a folder with female/ and male/ (DESIGN.md contract 2)
  card      write models/MODEL_CARD.md from the measured numbers
  label     sort an unlabelled folder into female/ and male/ with one key per image
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from realtime.cli import add_version, prog_name, setup_logging
from realtime.errors import UserError

log = logging.getLogger("training")

# Installed by requirements-train.txt, not by the runtime's requirements.txt.
TRAINING_MODULES = frozenset({"tensorflow", "keras", "h5py", "ml_dtypes"})


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .data import folder_items, prepare, utkface_items

    items, extra = [], {}
    if args.utkface:
        utk, dropped = utkface_items(Path(args.utkface))
        items += utk
        extra["dropped"] = dropped
    for folder in args.folder or []:
        items += folder_items(Path(folder))
    if args.limit:
        items = items[: args.limit]
    if not items:
        raise UserError("nothing to prepare: give --utkface DIR and/or --folder DIR")
    report = prepare(items, Path(args.out), size=args.size, margin=args.margin, extra_report=extra,
                     context=args.context)
    log.info("prepared %s", json.dumps({k: v for k, v in report.items() if k != "skipped_examples"}))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, parse_schedule, train

    cfg = TrainConfig(
        data=args.data, run=args.run, weights=args.weights, schedule=parse_schedule(args.schedule),
        batch_size=args.batch_size, lr=args.lr, frozen_epochs=args.frozen_epochs,
        min_age=args.min_age, mask_prob=args.mask_prob, mask_templates=args.mask_templates,
        seed=args.seed, max_steps=args.max_steps, val_limit=args.val_limit, face_region=args.face_region,
        age_head=args.age_head, age_weight=args.age_weight, child_gender_weight=args.child_gender_weight,
        lr_schedule=args.lr_schedule, patience=args.patience,
    )
    state = train(cfg, resume=args.resume)
    log.info("training done: best val score %.4f at epoch %s", state["best_val_acc"], state["best_epoch"])
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    meta = export(Path(args.checkpoint), Path(args.data), Path(args.out), args.size,
                  max_drop=args.max_drop, rep_samples=args.rep_samples,
                  mask_templates=Path(args.mask_templates) if args.mask_templates else None,
                  min_age=args.min_age, threads=args.threads, training_note=args.note,
                  limit=args.limit, flip=args.flip, uncertain_share=args.uncertain_share)
    test = meta["metrics"]["test"]
    log.info("exported %s: test accuracy %.4f (masked %.4f), threshold %.3f", args.out,
             test["accuracy"], meta["metrics"]["test_masked"]["accuracy"], meta["threshold"])
    return 0


def _module_command(name: str):
    def run(args: argparse.Namespace) -> int:
        import importlib

        return importlib.import_module(f"training.{name}").run(args)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog_name("python -m training"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="detect and crop faces into a cache")
    p.add_argument("--utkface", help="UTKFace folder with labels.csv and images/")
    p.add_argument("--folder", action="append", help="folder with female/ and male/ (repeatable)")
    p.add_argument("--out", required=True, help="cache folder to write")
    p.add_argument("--size", type=int, default=128, help="crop size in px (default 128)")
    p.add_argument("--margin", type=float, default=None, help="crop margin (default: realtime's)")
    p.add_argument("--context", type=float, default=1.5,
                   help="cache windows this many times wider than the runtime crop, so training "
                        "can re-frame faces looser and tighter (default 1.5; 1.0 = runtime crop only)")
    p.add_argument("--limit", type=int, default=0, help="only the first N images (for trials)")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("train", help="train VGG16 on a prepared cache (resumable)")
    p.add_argument("--data", required=True, help="prepared cache folder")
    p.add_argument("--run", required=True, help="run folder for checkpoints, history and plots")
    p.add_argument("--weights", default="none",
                   help="imagenet (download), none (from scratch, default) or PATH to weights")
    p.add_argument("--schedule", default="64:8,96:2",
                   help="input sizes and epochs, SIZE:EPOCHS,... (default 64:8,96:2)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4, help="peak Adam learning rate (cosine decay)")
    p.add_argument("--frozen-epochs", type=int, default=2,
                   help="epochs with a frozen base when weights are pretrained (default 2)")
    p.add_argument("--min-age", type=int, default=13,
                   help="adults from this age: gender is validated on them, and without the age head "
                        "training uses only them (default 13)")
    p.add_argument("--age-head", action="store_true",
                   help="add the apparent-age output and train on all ages (children's gender loss "
                        "weighted by --child-gender-weight)")
    p.add_argument("--age-weight", type=float, default=0.03,
                   help="weight of the age loss (Huber, years) against the gender loss (default 0.03)")
    p.add_argument("--child-gender-weight", type=float, default=0.3,
                   help="gender loss weight of faces under --min-age with the age head (default 0.3)")
    p.add_argument("--lr-schedule", choices=("cosine", "plateau"), default="cosine",
                   help="cosine decay over the schedule, or plateau: halve the rate after every 2 "
                        "epochs without a better validation score (default cosine)")
    p.add_argument("--patience", type=int, default=0,
                   help="stop when validation has not improved for this many epochs (default 0: never)")
    p.add_argument("--mask-prob", type=float, default=0.4, help="share of training crops masked")
    p.add_argument("--mask-templates", help="MaskTheFace templates folder (masks.cfg, templates/)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--face-region", choices=("full", "upper"), default="full",
                   help="upper: train on the upper half of the face only (masked-face experiment)")
    p.add_argument("--resume", action="store_true", help="continue the run from last.keras")
    p.add_argument("--max-steps", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--val-limit", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("export", help="int8 TFLite + metadata, with a float-vs-int8 parity check")
    p.add_argument("--checkpoint", required=True, help="Keras model (.keras) from a run")
    p.add_argument("--data", required=True, help="prepared cache (representative set, splits)")
    p.add_argument("--out", default="models/gender_vgg16_int8.tflite", help="output .tflite")
    p.add_argument("--size", type=int, default=64, help="input size in px (default 64)")
    p.add_argument("--max-drop", type=float, default=0.5,
                   help="fail when int8 accuracy is this many points below float (default 0.5)")
    p.add_argument("--rep-samples", type=int, default=300, help="representative crops (default 300)")
    p.add_argument("--mask-templates", help="MaskTheFace templates for the masked test report")
    p.add_argument("--min-age", type=int, default=13, help="report adults from this age")
    p.add_argument("--threads", type=int, default=2, help="interpreter threads for the checks (default 2)")
    p.add_argument("--flip", choices=("auto", "on", "off"), default="auto",
                   help="flip averaging (each face and its mirror image): auto keeps it when it is more "
                        "accurate on the validation split (default auto)")
    p.add_argument("--uncertain-share", type=float, default=0.05,
                   help="the uncertain band is the narrowest around the threshold that holds this share "
                        "of validation faces (default 0.05)")
    p.add_argument("--note", default="", help="how the model was trained (goes into the metadata)")
    p.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_export)

    for name, help_text in (("evaluate", "metrics of a .tflite model on a female/ male/ folder"),
                            ("card", "write models/MODEL_CARD.md from the measured numbers"),
                            ("label", "sort unlabelled face images into female/ and male/")):
        import importlib
        import importlib.util

        if importlib.util.find_spec(f"training.{name}") is None:
            continue
        module = importlib.import_module(f"training.{name}")
        p = sub.add_parser(name, help=help_text, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(func=_module_command(name))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if getattr(args, "margin", 0) is None:
        from realtime.crop import DEFAULT_MARGIN

        args.margin = DEFAULT_MARGIN
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TRAINING_MODULES:
            raise
        print(f"error: `{args.command}` needs {exc.name}, which is not installed: pip install -r "
              "requirements-train.txt (or pip install 'face-gender-realtime[train]')", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
