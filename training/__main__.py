"""Train, export and check the gender model; sort and review labelled folders.

  prepare   detect and crop faces (runtime detector + realtime/crop.py) into a cache, with a split
  train     VGG16 on a prepared cache; checkpoints every epoch, --resume
  export    full-integer int8 TFLite + metadata, with a float-vs-int8 parity check
  evaluate  accuracy, recalls, uncertain share, speed and plots of a .tflite model on female/ + male/
  card      write a model card from the measured numbers
  label     sort an unlabelled folder into female/ and male/ with one key per image
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

from realtime.cli import (
    Parser,
    add_version,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    prog_name,
    setup_logging,
    unit_float,
)
from realtime.errors import UserError
from realtime.files import Output, check_outputs
from realtime.native import filter_native_stderr, unfilter_native_stderr

from .errors import TrainingInterruptedError
from .split import FRACTIONS, SEED

log = logging.getLogger("training")

DEFAULT_SIZE = 64  # the runtime's speed targets hold at 64 px; train, export and evaluate agree on it
DEFAULT_SCHEDULE = f"{DEFAULT_SIZE}:12"

# Installed by requirements-train.txt, not by the runtime's requirements.txt.
TRAINING_MODULES = frozenset({"tensorflow", "keras", "h5py", "ml_dtypes"})


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .data import describe_data, folder_items, prepare, stratified_sample, utkface_items

    out = Path(args.out)
    check_outputs([Output("--out", out, folder=True)],
                  [Path(f) for f in [args.utkface, *(args.folder or []), *(args.val or []), *(args.test or [])] if f])
    if (out / "crops.npy").exists() and not args.force:
        raise UserError(f"{out} already holds a prepared cache; use another --out, or --force to replace it")
    for name, value in (("--val-fraction", args.val_fraction), ("--test-fraction", args.test_fraction)):
        if not 0.0 <= value < 1.0:
            raise UserError(f"{name} must be in [0, 1), got {value}")
    if args.val_fraction + args.test_fraction >= 1.0:
        raise UserError("--val-fraction + --test-fraction must leave some faces for training")
    items, extra = [], {}
    if args.utkface:
        utk, dropped = utkface_items(Path(args.utkface))
        items += utk
        extra["dropped"] = dropped
    for folder in args.folder or []:
        items += folder_items(Path(folder))
    for split, folders in (("val", args.val), ("test", args.test)):
        for folder in folders or []:
            items += [replace(item, split=split) for item in folder_items(Path(folder))]
    if args.limit:
        items = stratified_sample(items, args.limit, args.split_seed)
    if not items:
        raise UserError("nothing to prepare: give --utkface DIR and/or --folder DIR")
    empty = [label for label in ("female", "male") if not any(item.gender == label for item in items)]
    if empty:
        raise UserError(f"no {' and no '.join(empty)} images in the given folders: a classifier needs both "
                        "female/ and male/ images")
    fractions = {"val": 0.0 if args.val else args.val_fraction, "test": 0.0 if args.test else args.test_fraction}
    extra["data"] = describe_data(args, items)
    extra["split"] = {"seed": args.split_seed, "fractions": fractions,
                      "explicit": {"val": args.val or [], "test": args.test or []}}
    report = prepare(items, out, size=args.size, margin=args.margin, extra_report=extra,
                     context=args.context, split_seed=args.split_seed, fractions=fractions)
    log.info("prepared %s", json.dumps({k: v for k, v in report.items() if k != "skipped_examples"}))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, parse_schedule, train

    # The run may live inside the cache folder (as teach's cache does), never hold or replace its files.
    data = Path(args.data)
    check_outputs([Output("--run", Path(args.run), folder=True)],
                  [f for f in data.iterdir() if f.is_file()] if data.is_dir() else [])
    cfg = TrainConfig(
        data=args.data, run=args.run, weights=args.weights, schedule=parse_schedule(args.schedule),
        batch_size=args.batch_size, lr=args.lr, frozen_epochs=args.frozen_epochs,
        min_age=args.min_age, mask_prob=args.mask_prob, mask_templates=args.mask_templates,
        seed=args.seed, max_steps=args.max_steps, val_limit=args.val_limit, face_region=args.face_region,
        age_head=args.age_head, age_weight=args.age_weight, child_gender_weight=args.child_gender_weight,
        lr_schedule=args.lr_schedule, patience=args.patience, swa=args.swa,
        teacher_cache=_teacher_cache(args), teachers=tuple(args.teachers.split(",")),
        teacher_weight=args.teacher_weight, teacher_mix=args.teacher_mix, feature_weight=args.feature_weight,
        clean_labels=args.clean_labels, clean_threshold=args.clean_threshold,
    )
    state = train(cfg, resume=args.resume, force=args.force, stop_after=args.stop_after)
    log.info("training done: best val score %.4f at epoch %s", state["best_val_acc"], state["best_epoch"])
    return 0


def _teacher_cache(args: argparse.Namespace) -> str:
    """``--teacher-cache auto`` is the teachers folder inside the prepared cache (where ``teach``
    writes it)."""
    if not args.teacher_cache:
        return ""
    folder = Path(args.data) / "teachers" if args.teacher_cache == "auto" else Path(args.teacher_cache)
    from .teachers import TEACHERS

    unknown = [t for t in args.teachers.split(",") if t not in TEACHERS]
    if unknown:
        raise UserError(f"--teachers: unknown teacher(s) {', '.join(unknown)} (known: {', '.join(TEACHERS)})")
    return str(folder)


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    checkpoint = Path(args.checkpoint)
    out = Path(args.out) if args.out else checkpoint.parent / DEFAULT_EXPORT_NAME
    float16 = Path(args.float16_weights) if args.float16_weights else None
    check_outputs([Output("--out", out), Output("--out's metadata", out.with_suffix(".json")),
                   Output("--float16-weights", float16)], [checkpoint, Path(args.data)])
    refuse_overwrite(out, args.force, also=out.with_suffix(".json"))
    if float16 is not None:
        refuse_overwrite(float16, args.force)
    from realtime.files import check_writable

    check_writable(out)  # before the long conversion, not after it
    meta = export(checkpoint, Path(args.data), out, args.size,
                  max_drop=args.max_drop, rep_samples=args.rep_samples, mask_templates=args.mask_templates,
                  min_age=args.min_age, threads=args.threads, training_note=args.note,
                  reproduce=args.reproduce,
                  float16_out=Path(args.float16_weights) if args.float16_weights else None, limit=args.limit,
                  flip=args.flip, flip_share=args.flip_share,
                  uncertain_share=args.uncertain_share)
    test = meta["metrics"]["test"]
    log.info("exported %s: test accuracy %.4f (masked %.4f), threshold %.3f; use it with "
             "`face-gender --model %s`", out, test["accuracy"], meta["metrics"]["test_masked"]["accuracy"],
             meta["threshold"], out)
    return 0


DEFAULT_EXPORT_NAME = "model_int8.tflite"


def refuse_overwrite(path: Path, force: bool, also: Path | None = None) -> None:
    """Existing files are replaced only with --force (the shipped model is never replaced by default)."""
    for target in (path, also):
        if target is not None and target.exists() and not force:
            raise UserError(f"{target} already exists; choose another --out, or add --force to replace it")


def _module_command(name: str):
    def run(args: argparse.Namespace) -> int:
        import importlib

        return importlib.import_module(f"training.{name}").run(args)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=prog_name("python -m training"), description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="detect and crop faces into a cache")
    p.add_argument("--utkface", help="UTKFace folder with labels.csv and images/")
    p.add_argument("--folder", action="append", help="folder with female/ and male/ (repeatable)")
    p.add_argument("--out", required=True, help="cache folder to write")
    p.add_argument("--size", type=positive_int, default=128, help="crop size in px (default 128)")
    p.add_argument("--margin", type=non_negative_float, default=None, help="crop margin (default: realtime's)")
    p.add_argument("--context", type=positive_float, default=1.5,
                   help="cache windows this many times wider than the runtime crop, so training "
                        "can re-frame faces looser and tighter (default 1.5; 1.0 = runtime crop only)")
    p.add_argument("--val", action="append", metavar="DIR",
                   help="a folder with female/ and male/ used as the validation split (repeatable); "
                        "then nothing else goes to validation")
    p.add_argument("--test", action="append", metavar="DIR",
                   help="a folder with female/ and male/ used as the test split (repeatable); "
                        "then nothing else goes to test")
    p.add_argument("--val-fraction", type=unit_float, default=FRACTIONS["val"],
                   help=f"share of the faces for validation (default {FRACTIONS['val']})")
    p.add_argument("--test-fraction", type=unit_float, default=FRACTIONS["test"],
                   help=f"share of the faces for test (default {FRACTIONS['test']})")
    p.add_argument("--split-seed", type=int, default=SEED,
                   help=f"seed of the split and of --limit's sample (default {SEED})")
    p.add_argument("--data-name", help="what the data is, for the metadata and the model card "
                                       "(default: UTKFace, or the folder names)")
    p.add_argument("--data-licence", help="the data's licence, for the metadata and the model card "
                                          "(default: UTKFace's, or 'not stated' for folders)")
    p.add_argument("--limit", type=non_negative_int, default=0,
                   help="only N images, sampled per class with --split-seed (for trials; default 0: all)")
    p.add_argument("--force", action="store_true", help="replace an existing cache in --out")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("train", help="train VGG16 on a prepared cache (resumable)")
    p.add_argument("--data", required=True, help="prepared cache folder")
    p.add_argument("--run", required=True, help="run folder for checkpoints, history and plots")
    p.add_argument("--weights", default="none",
                   help="shipped (fine-tune the shipped model), none (from scratch), imagenet (needs a "
                        "download), or PATH (.npz float16 snapshot, .keras model, .tflite model of ours, "
                        "or VGG16 base .h5) (default none)")
    p.add_argument("--schedule", default=DEFAULT_SCHEDULE,
                   help=f"input sizes and epochs, SIZE:EPOCHS,... (default {DEFAULT_SCHEDULE})")
    p.add_argument("--batch-size", type=positive_int, default=32, help="crops per step (default 32)")
    p.add_argument("--lr", type=positive_float, default=1e-4, help="peak Adam learning rate (cosine decay)")
    p.add_argument("--frozen-epochs", type=non_negative_int, default=2,
                   help="epochs with a frozen base when weights are pretrained (default 2)")
    p.add_argument("--min-age", type=non_negative_int, default=13,
                   help="adults from this age: gender is validated on them, and without the age head "
                        "training uses only them (default 13)")
    p.add_argument("--age-head", action="store_true",
                   help="add the apparent-age output and train on all ages (children's gender loss "
                        "weighted by --child-gender-weight)")
    p.add_argument("--age-weight", type=non_negative_float, default=0.03,
                   help="weight of the age loss (Huber, years) against the gender loss (default 0.03)")
    p.add_argument("--child-gender-weight", type=non_negative_float, default=0.3,
                   help="gender loss weight of faces under --min-age with the age head (default 0.3)")
    p.add_argument("--lr-schedule", choices=("cosine", "plateau", "constant"), default="cosine",
                   help="cosine decay over the schedule, plateau: halve the rate after every 2 "
                        "epochs without a better validation score, or constant (default cosine)")
    p.add_argument("--swa", action="store_true",
                   help="stochastic weight averaging: also validate the mean of every epoch's weights "
                        "(RUN/swa.keras); it becomes best.keras when it scores best")
    p.add_argument("--patience", type=non_negative_int, default=0,
                   help="stop when validation has not improved for this many epochs (default 0: never)")
    p.add_argument("--mask-prob", type=unit_float, default=0.4, help="share of training crops masked (default 0.4)")
    p.add_argument("--mask-templates", default="bundled",
                   help="MaskTheFace templates: bundled (shipped with the package), none (drawn masks "
                        "only), or a folder with masks.cfg and templates/ (default bundled)")
    p.add_argument("--seed", type=int, default=1,
                   help="seed of weights, batches and augmentation: the same command gives the same "
                        "weights on the same CPU (default 1)")
    p.add_argument("--face-region", choices=("full", "upper"), default="full",
                   help="upper: train on the upper half of the face only (masked-face experiment)")
    p.add_argument("--resume", action="store_true", help="continue the run from last.keras")
    p.add_argument("--force", action="store_true", help="start over in a run folder that holds a run")
    p.add_argument("--stop-after", type=non_negative_int, default=0, metavar="N",
                   help="stop once N epochs of the schedule are done (a stage that fits a session; the "
                        "learning-rate schedule stays that of the whole schedule); the same command with "
                        "--resume goes on (default: train the whole schedule)")
    p.add_argument("--max-steps", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--val-limit", type=int, default=0, help=argparse.SUPPRESS)
    g = p.add_argument_group("distillation (teacher outputs from `teach`)")
    g.add_argument("--teacher-cache", metavar="DIR",
                   help="learn from cached teacher outputs: auto (DATA/teachers, where `teach` writes them) or "
                        "a folder (default: no teachers, the labels only)")
    g.add_argument("--teachers", default="faceres,agegender,cydral,shipped",
                   help="teachers whose p(female) is combined, comma-separated (default all four)")
    g.add_argument("--teacher-weight", type=unit_float, default=0.7,
                   help="share of the teachers' combined p(female) in the gender target; the rest is the "
                        "label (default 0.7)")
    g.add_argument("--teacher-mix", choices=("fixed", "agreement"), default="fixed",
                   help="fixed: every face gets --teacher-weight; agreement: that weight times how much the "
                        "teachers agree on the face (1 - the spread of their p(female)), so the label decides "
                        "where they disagree (default fixed)")
    g.add_argument("--feature-weight", type=non_negative_float, default=0.5,
                   help="weight of the cosine loss on faceres' 1024-d face feature, through a projection "
                        "head that export drops; 0 = none (default 0.5)")
    g.add_argument("--clean-labels", choices=("flip", "off"), default="flip",
                   help="flip: train and val labels that faceres and the Cydral model both contradict with "
                        "p >= --clean-threshold take the teachers' label (the test split never changes) "
                        "(default flip)")
    g.add_argument("--clean-threshold", type=unit_float, default=0.9,
                   help="how sure both cleaning teachers must be (default 0.9)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("export", help="int8 TFLite + metadata, with a float-vs-int8 parity check")
    p.add_argument("--checkpoint", required=True, help="Keras model (.keras) from a run, e.g. RUN/best.keras")
    p.add_argument("--data", required=True, help="prepared cache (representative set, splits)")
    p.add_argument("--out", help=f"output .tflite, its .json beside it (default: {DEFAULT_EXPORT_NAME} in the "
                                 "checkpoint's run folder)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--size", type=positive_int, default=DEFAULT_SIZE, help=f"input size in px (default {DEFAULT_SIZE})")
    p.add_argument("--max-drop", type=non_negative_float, default=0.5,
                   help="fail when int8 accuracy is this many points below float (default 0.5)")
    p.add_argument("--rep-samples", type=positive_int, default=300, help="representative crops (default 300)")
    p.add_argument("--mask-templates", default="bundled",
                   help="MaskTheFace templates for the masked reports: bundled, none or a folder (default bundled)")
    p.add_argument("--min-age", type=non_negative_int, default=13, help="report adults from this age (default 13)")
    p.add_argument("--threads", type=positive_int, default=2, help="interpreter threads for the checks (default 2)")
    p.add_argument("--flip", choices=("auto", "on", "off"), default="auto",
                   help="flip averaging (each face and its mirror image): auto keeps it when it is more "
                        "accurate on the validation split (default auto)")
    p.add_argument("--flip-share", type=unit_float, default=0.1,
                   help="mirror only this share of faces, those nearest the threshold (a band fitted on the "
                        "validation split), where the mirror can change the label; 1 mirrors every face "
                        "(default 0.1)")
    p.add_argument("--uncertain-share", type=unit_float, default=0.05,
                   help="the uncertain band is the narrowest around the threshold that holds this share "
                        "of validation faces (default 0.05)")
    p.add_argument("--note", default="", help="how the model was trained (goes into the metadata)")
    p.add_argument("--reproduce", default="", help="the command that reproduces the model (goes into the "
                   "metadata, for the model card)")
    p.add_argument("--float16-weights", metavar="NPZ", help="also write the float weights as float16 (~30 MB), "
                   "to fine-tune from with train --weights NPZ (default: not written)")
    p.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_export)

    for name, help_text in (("teach", "cache face-pretrained teacher outputs for distillation"),
                            ("evaluate", "metrics of a .tflite model on a female/ male/ folder"),
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


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        # SIGTERM and SIGHUP (a closed terminal, `kill`) stop training as Ctrl-C does: progress is kept.
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None:
                signal.signal(sig, _stop_like_ctrl_c)
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if getattr(args, "margin", 0) is None:
        from realtime.crop import DEFAULT_MARGIN

        args.margin = DEFAULT_MARGIN
    # TensorFlow's start-up notes ("oneDNN custom operations are on", "All log messages before
    # absl::InitializeLog()") and glog lines are dropped from here on, while this is the only thread;
    # -v (debug) keeps them. Python's own log lines and progress bars are not filtered.
    filtered = filter_native_stderr()
    try:
        return _run(args)
    finally:
        if filtered:
            unfilter_native_stderr()


def _run(args: argparse.Namespace) -> int:
    """The chosen subcommand, its errors as one ``error:`` line."""
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
    except TrainingInterruptedError as exc:
        print(str(exc), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
