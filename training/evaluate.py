"""Evaluate a .tflite gender model on a folder of labelled images (docs/architecture.md, contract 2).

  python -m training evaluate --model M.tflite --data DIR --report R.json [--crops]

DIR holds female/ and male/ image folders. Each image goes through the runtime face detector and
its largest face is cropped by the classifier itself (``GenderClassifier.crops``, the margin from
the model's metadata); when no face is found the whole image is used as the face (counted in
``no_face``). ``--crops`` skips detection for images that already are face crops. Unreadable
images are skipped with a warning and counted (``unreadable``).

The report (JSON, written atomically) holds n, no_face, accuracy (uncertain faces decided by the
threshold), accuracy_excluding_uncertain, balanced_accuracy, recall_female, recall_male, uncertain
(share of faces labelled uncertain), ms_per_face (classification only, batched), a confusion
matrix, accuracy by face size, a reliability table with its expected calibration error (ece) and,
when ages and races are known (UTKFace names AGE_GENDER_RACE_*.jpg or --labels CSV with
file,age,gender,race), accuracy by gender x age band x race, and the faces the model got wrong
(``mistakes``, most confident first: the likeliest mislabelled images). Plots go beside the report:
<stem>_confusion.png, <stem>_reliability.png and <stem>_mistakes.jpg (a contact sheet of the first
mistakes as the model saw them, when there are any).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from realtime.classifier import GenderClassifier
from realtime.cli import positive_int
from realtime.config import add_pipeline_args
from realtime.crop import Box, crop_face, largest_box
from realtime.errors import UserError
from realtime.face import UNCERTAIN
from realtime.face_detector import FaceDetector, StillImageDetector
from realtime.files import Output, check_outputs
from realtime.overlay import contact_sheet
from realtime.sinks import write_image_atomic
from realtime.sources import read_image

from .data import Item, folder_items
from .metrics import RELIABILITY_BINS, group_table, metrics, reliability

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

# Face box side (px, the larger of width and height): lower bounds and names of the buckets.
FACE_SIZE_BUCKETS = ((0, "<48"), (48, "48-95"), (96, "96-191"), (192, ">=192"))
NO_FACE_BUCKET = "no_face"
UTK_NAME = re.compile(r"^(\d{1,3})_([01])_([0-4])_")
UTK_RACES = ("White", "Black", "Asian", "Indian", "Others")
MAX_LISTED = 20
MAX_MISTAKES = 100  # listed in the report, most confident first
SHEET_MISTAKES = 48  # shown on <stem>_mistakes.jpg


@dataclass
class Face:
    """One evaluated image: its truth, the face used and (after classification) ``p_female``."""

    path: Path
    gender: str  # truth, from the folder name
    side: int  # face box side in px
    found: bool  # False: no face detected, the whole image was used
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # the face used (x, y, w, h)
    age: int | None = None
    race: str = ""
    p_female: float = math.nan


@dataclass
class Results:
    faces: list[Face]
    unreadable: list[str]
    classify_seconds: float


# -- inputs ------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help=".tflite model (its .json metadata beside it)")
    parser.add_argument("--data", required=True, help="folder with female/ and male/ images")
    parser.add_argument("--report", required=True, help="report JSON to write (plots go beside it)")
    parser.add_argument("--crops", action="store_true", help="images are face crops: skip detection")
    add_pipeline_args(parser, include=("detector", "detector_backend"),
                      detector_help="auto: the runtime's still-image detector (short- and full-range merged, "
                                    "padded retry; default), short, full, or a .tflite path")
    parser.add_argument("--labels", help="CSV with file,age,gender,race: age and race for the by-group "
                                         "table (default: from UTKFace-style file names); the true "
                                         "gender always comes from the folder")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="faces per classifier call (default 16)")
    add_pipeline_args(parser, include=("threads",))


def read_labels(path: Path) -> dict[str, tuple[int | None, str]]:
    """``file name → (age, race)`` from a CSV with the columns file,age,gender,race."""
    if not path.is_file():
        raise UserError(f"labels file not found: {path}")
    out: dict[str, tuple[int | None, str]] = {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"file", "age", "race"} - set(reader.fieldnames or [])
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(sorted(missing))} "
                            "(expected file,age,gender,race)")
        for line, row in enumerate(reader, start=2):
            try:
                age = int(row["age"]) if (row["age"] or "").strip() else None
            except ValueError as exc:
                raise UserError(f"{path}:{line}: bad age {row['age']!r}") from exc
            out[Path(row["file"]).name] = (age, (row["race"] or "").strip())
    return out


def group_info(path: Path, labels: dict[str, tuple[int | None, str]]) -> tuple[int | None, str] | None:
    """``(age, race)`` from ``labels`` or a UTKFace file name; ``None`` when unknown."""
    if path.name in labels:
        return labels[path.name]
    match = UTK_NAME.match(path.name)
    if match:
        return int(match.group(1)), UTK_RACES[int(match.group(3))]
    return None


def list_images(data: Path) -> list[Item]:
    if not data.is_dir():
        raise UserError(f"data folder not found: {data}")
    items = folder_items(data)
    if not items:
        raise UserError(f"no images in {data}/female or {data}/male")
    return items


# -- evaluation ----------------------------------------------------------------------------------
def face_box(image: np.ndarray, detector: FaceDetector | StillImageDetector | None) -> tuple[Box, bool]:
    """The largest detected face's box, or the whole image (``found=False`` when none was found)."""
    height, width = image.shape[:2]
    whole = (0, 0, width, height)
    if detector is None:
        return whole, True
    faces = detector.detect(image)
    best = largest_box([f.box for f in faces])
    return (whole, False) if best is None else (faces[best].crop_box, True)


def _faces(items: list[Item], detector: FaceDetector | StillImageDetector | None, labels: dict, unreadable: list[str]
           ) -> Iterator[tuple[Face, np.ndarray]]:
    for item in tqdm(items, desc="evaluate", unit="img"):
        image = read_image(item.path)
        if image is None:
            log.warning("skipping unreadable image %s", item.path)
            unreadable.append(str(item.path))
            continue
        box, found = face_box(image, detector)
        info = group_info(item.path, labels)
        age, race = info if info else (None, "")
        face = Face(item.path, item.gender, round(max(box[2], box[3])), found,
                    tuple(float(v) for v in box), age, race)
        yield face, image


def classify_all(items: list[Item], clf: GenderClassifier, detector: FaceDetector | StillImageDetector | None,
                 labels: dict, batch_size: int) -> Results:
    """Detect (unless ``detector`` is None), crop and classify every image, in batches."""
    faces: list[Face] = []
    unreadable: list[str] = []
    pending: list[np.ndarray] = []
    seconds = 0.0
    clf.predict_crops(np.zeros((batch_size, clf.input_size, clf.input_size, 3), np.uint8))  # warm-up

    def flush() -> None:
        nonlocal seconds
        started = time.perf_counter()
        p = clf.predict_crops(np.concatenate(pending))
        seconds += time.perf_counter() - started
        for face, value in zip(faces[len(faces) - len(p):], p, strict=True):
            face.p_female = float(value)
        pending.clear()

    for face, image in _faces(items, detector, labels, unreadable):
        faces.append(face)
        pending.append(clf.crops(image, [face.box]))
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    return Results(faces, unreadable, seconds)


# -- metrics -------------------------------------------------------------------------------------
def size_bucket(face: Face) -> str:
    if not face.found:
        return NO_FACE_BUCKET
    return [name for low, name in FACE_SIZE_BUCKETS if face.side >= low][-1]


def confusion(truth: list[str], predicted: list[str], classes: tuple[str, ...], columns: tuple[str, ...]
              ) -> list[list[int]]:
    """Counts with rows = true class, columns = predicted label."""
    return [[sum(t == row and p == col for t, p in zip(truth, predicted, strict=True)) for col in columns]
            for row in classes]


def build_report(results: Results, clf: GenderClassifier) -> dict:
    faces = results.faces
    pos, neg = clf.info.positive_label, clf.info.negative_label
    threshold = clf.info.threshold
    y = np.array([f.gender == pos for f in faces], dtype=np.int64)
    p = np.array([f.p_female for f in faces], dtype=np.float32)
    truth = [f.gender for f in faces]
    decided = [pos if v >= threshold else neg for v in p]
    shown = [clf.label_for(float(v)) for v in p]
    certain = [i for i, label in enumerate(shown) if label != UNCERTAIN]
    report = {
        **metrics(y, p, threshold),
        "no_face": sum(not f.found for f in faces),
        "unreadable": len(results.unreadable),
        "uncertain": shown.count(UNCERTAIN) / len(faces),
        "accuracy_excluding_uncertain": float(np.mean([shown[i] == truth[i] for i in certain]))
        if certain else math.nan,
        "ms_per_face": 1000.0 * results.classify_seconds / len(faces),
        "threshold": threshold,
        "uncertain_band": list(clf.info.uncertain_band),
        "confusion": {
            "rows": "true", "columns": "predicted", "classes": [pos, neg],
            "counts": confusion(truth, decided, (pos, neg), (pos, neg)),
            "columns_with_uncertain": [pos, neg, UNCERTAIN],
            "counts_with_uncertain": confusion(truth, shown, (pos, neg), (pos, neg, UNCERTAIN)),
        },
        "by_face_size": [],
    }
    buckets = [size_bucket(f) for f in faces]
    for name in [n for _, n in FACE_SIZE_BUCKETS] + [NO_FACE_BUCKET]:
        sel = np.array([b == name for b in buckets])
        if sel.any():
            report["by_face_size"].append({"bucket": name, **metrics(y[sel], p[sel], threshold)})
    report["reliability"], report["ece"] = reliability(y, p)
    if any(f.age is not None or f.race for f in faces):
        meta = [{"gender": f.gender, "age": "" if f.age is None else f.age, "race": f.race} for f in faces]
        report["by_group"] = group_table(meta, p, threshold, pos)
    # Wrong answers (threshold decision), the most confident first: at the top are the faces the
    # model is surest about, where a wrong folder (a mislabelled image) is most likely.
    wrong = sorted((i for i in range(len(faces)) if decided[i] != truth[i]), key=lambda i: -abs(p[i] - threshold))
    report["mistakes_total"] = len(wrong)
    report["mistakes"] = [{"file": str(faces[i].path), "true": truth[i], "predicted": decided[i],
                           "shown": shown[i], "p_female": float(p[i]), "box": [round(v, 1) for v in faces[i].box],
                           "face_found": faces[i].found} for i in wrong[:MAX_MISTAKES]]
    report["unreadable_files"] = results.unreadable[:MAX_LISTED]
    report["no_face_files"] = [str(f.path) for f in faces if not f.found][:MAX_LISTED]
    return report


# -- outputs -------------------------------------------------------------------------------------
def _json_safe(value: object) -> object:
    """NaN/inf → null (JSON has no NaN), numpy scalars → Python numbers."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(_json_safe(data), indent=2, allow_nan=False))
    tmp.replace(path)


def _save_figure(fig: Figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(path.stem + ".partial.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def plot_confusion(report: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    conf = report["confusion"]
    # What users see: female / male / uncertain (the band around the threshold).
    counts = np.array(conf.get("counts_with_uncertain", conf["counts"]), dtype=float)
    columns = conf.get("columns_with_uncertain", conf["classes"])
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (r, c), n in np.ndenumerate(counts):
        ax.text(c, r, f"{int(n)}\n{shares[r, c]:.0%}", ha="center", va="center",
                color="white" if shares[r, c] > 0.6 else "black")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(conf["classes"])), conf["classes"])
    lo, hi = report["uncertain_band"]
    ax.set_xlabel(f"shown label (uncertain when {lo:.2f} <= p_female < {hi:.2f})")
    ax.set_ylabel("true")
    ax.set_title(f"n={report['n']}, accuracy {report['accuracy']:.3f}")
    _save_figure(fig, path)


def plot_reliability(report: dict, p: np.ndarray, path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = report["reliability"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.5, 5.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect calibration")
    top.plot([r["mean_p"] for r in rows], [r["female_share"] for r in rows], marker="o", label="model")
    top.set_ylabel("observed female share")
    top.set_title(f"reliability (ECE {report['ece']:.3f})")
    top.legend(loc="upper left")
    bottom.hist(p, bins=RELIABILITY_BINS, range=(0, 1), color="tab:blue")
    bottom.set_xlabel("predicted p_female")
    bottom.set_ylabel("faces")
    _save_figure(fig, path)


def mistakes_sheet(report: dict) -> np.ndarray | None:
    """Contact sheet of the report's first mistakes, each face cropped as the model saw it (the
    metadata's margin; the whole image where no face was found), captioned with the folder's label,
    the model's answer and the file name; None when there are none to show."""
    pos = report["confusion"]["classes"][0]
    tiles = []
    for m in report.get("mistakes", [])[:SHEET_MISTAKES]:
        image = read_image(Path(m["file"]))
        if image is None:  # gone or changed since it was evaluated
            continue
        crop = crop_face(image, m["box"], 128, report["crop_margin"] if m["face_found"] else 0.0)
        p = float(m["p_female"])
        confidence = p if m["predicted"] == pos else 1.0 - p
        tiles.append((crop, m["shown"], f"{m['true']} -> {m['predicted']} {confidence:.2f}\n{Path(m['file']).name}"))
    return contact_sheet(tiles) if tiles else None


def write_outputs(report: dict, p: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    path.parent.mkdir(parents=True, exist_ok=True)
    files = list(report_files(path).values())
    plots = {"confusion": files[1], "reliability": files[2]}
    plot_confusion(report, plots["confusion"])
    plot_reliability(report, p, plots["reliability"])
    sheet_path = files[3]
    sheet = mistakes_sheet(report)
    if sheet is not None:
        write_image_atomic(sheet_path, sheet)
        plots["mistakes"] = sheet_path
    else:
        sheet_path.unlink(missing_ok=True)  # an earlier run's sheet would show mistakes this model did not make
    report["plots"] = {k: str(v) for k, v in plots.items()}
    write_json(path, report)


# -- CLI -----------------------------------------------------------------------------------------
def evaluate(model: Path, data: Path, crops: bool = False, detector: str = "auto",
             labels: Path | None = None, batch_size: int = 16, threads: int = 2,
             detector_backend: str = "auto") -> tuple[dict, np.ndarray]:
    """Classify every image under ``data``; returns the report and the ``p_female`` values."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    items = list_images(data)
    label_map = read_labels(labels) if labels else {}
    clf = GenderClassifier(model, num_threads=threads, max_batch=batch_size)
    if crops:
        results = classify_all(items, clf, None, label_map, batch_size)
    else:
        det = (StillImageDetector(backend=detector_backend) if detector == "auto"
               else FaceDetector(detector, mode="image", backend=detector_backend))
        with det:
            results = classify_all(items, clf, det, label_map, batch_size)
    if not results.faces:
        raise UserError(f"none of the {len(items)} images under {data} could be read")
    report = {"model": str(model), "data": str(data), "mode": "crops" if crops else f"detector:{detector}",
              "input_size": clf.input_size, "crop_margin": clf.info.crop_margin, "batch_size": batch_size,
              "images": len(items), **build_report(results, clf)}
    return report, np.array([f.p_female for f in results.faces], dtype=np.float32)


def report_files(path: Path) -> dict[str, Path]:
    """The files ``evaluate`` writes: the report and, beside it, its plots and mistakes sheet."""
    return {"--report": path, "--report's confusion plot": path.with_name(f"{path.stem}_confusion.png"),
            "--report's reliability plot": path.with_name(f"{path.stem}_reliability.png"),
            "--report's mistakes sheet": path.with_name(f"{path.stem}_mistakes.jpg")}


def check_report_path(path: Path, inputs: list[Path] | tuple[Path, ...] = ()) -> None:
    """Before any work: the report and its plots can be written beside ``path`` and write no input
    (one UserError if not)."""
    check_outputs([Output(option, file) for option, file in report_files(path).items()], inputs)
    if path.is_dir():
        raise UserError(f"--report {path} is a folder; give a file name such as {path / 'report.json'}")
    if path.parent.exists() and not path.parent.is_dir():
        raise UserError(f"cannot write --report {path}: {path.parent} is not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UserError(f"cannot write --report {path}: {path.parent} is not a writable folder "
                        f"({exc.strerror or exc})") from exc


def run(args: argparse.Namespace) -> int:
    report_path = Path(args.report)
    model = Path(args.model)
    inputs = [model, model.with_suffix(".json"), Path(args.data), *([Path(args.labels)] if args.labels else [])]
    check_report_path(report_path, inputs)  # fails now, not after the whole evaluation
    report, p = evaluate(Path(args.model), Path(args.data), crops=args.crops, detector=args.detector,
                         labels=Path(args.labels) if args.labels else None, batch_size=args.batch_size,
                         threads=args.threads, detector_backend=args.detector_backend)
    write_outputs(report, p, report_path)
    log.info("evaluated %d faces (%d without a detected face, %d unreadable): accuracy %.4f, balanced "
             "%.4f, uncertain %.3f, %.1f ms/face; report %s", report["n"], report["no_face"],
             report["unreadable"], report["accuracy"], report["balanced_accuracy"], report["uncertain"],
             report["ms_per_face"], report_path)
    if "mistakes" in report["plots"]:
        n = report["mistakes_total"]
        log.info("%d wrong answer%s, the most confident first (check those images' folders): %s",
                 n, "" if n == 1 else "s", report["plots"]["mistakes"])
    return 0
