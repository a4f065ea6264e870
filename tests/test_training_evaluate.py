"""``python -m training evaluate`` (docs/architecture.md, contract 2) with a tiny model whose answers are known.

The colour model says "female" for coloured crops and "male" for gray ones, and the fixture
dataset has coloured female/ and grayscale male/ images, so every metric has an exact value.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures import FaceDataset, error_lines, run_training, write_metadata

from training.evaluate import Face, evaluate, group_info, read_labels, reliability, size_bucket

CONTRACT_KEYS = {"n", "no_face", "accuracy", "balanced_accuracy", "recall_female", "recall_male",
                 "uncertain", "ms_per_face"}
EXTRA_KEYS = {"accuracy_excluding_uncertain", "unreadable", "confusion", "by_face_size", "by_group",
              "ece", "reliability", "threshold", "uncertain_band", "plots"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def counts(dataset: FaceDataset) -> tuple[int, int]:
    """Readable female and male images."""
    female = sum(p.parent.name == "female" for p in dataset.faces + dataset.no_face)
    return female, dataset.readable - female


def model_variant(colour_model: Path, folder: Path, **metadata: object) -> Path:
    """A copy of the colour model with changed metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    path = Path(shutil.copy(colour_model, folder / colour_model.name))
    write_metadata(path, 32, **metadata)
    return path


@pytest.fixture(scope="module")
def cli_report(colour_model: Path, face_dataset: FaceDataset, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[dict, Path, str]:
    report = tmp_path_factory.mktemp("evaluate") / "eval.json"
    proc = run_training("evaluate", "--model", str(colour_model), "--data", str(face_dataset.root),
                        "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    return json.loads(report.read_text()), report, proc.stderr


def test_cli_writes_contract_report(cli_report: tuple[dict, Path, str], face_dataset: FaceDataset) -> None:
    report, _, stderr = cli_report
    assert report.keys() >= CONTRACT_KEYS | EXTRA_KEYS
    female, male = counts(face_dataset)
    assert report["n"] == female + male
    assert report["no_face"] == len(face_dataset.no_face) == 1
    assert report["unreadable"] == len(face_dataset.unreadable) == 2
    assert stderr.count("unreadable image") == 2
    assert not error_lines(stderr)
    for key in ("accuracy", "balanced_accuracy", "recall_female", "recall_male",
                "accuracy_excluding_uncertain"):
        assert report[key] == 1.0, key
    assert report["uncertain"] == 0.0
    assert report["ms_per_face"] > 0
    assert report["confusion"]["classes"] == ["female", "male"]
    assert report["confusion"]["counts"] == [[female, 0], [0, male]]


def test_cli_report_tables(cli_report: tuple[dict, Path, str], face_dataset: FaceDataset) -> None:
    report, _, _ = cli_report
    sizes = {row["bucket"]: row for row in report["by_face_size"]}
    assert sum(row["n"] for row in sizes.values()) == report["n"]
    assert sizes["no_face"]["n"] == 1
    assert {"48-95", "96-191"} <= sizes.keys() <= {"<48", "48-95", "96-191", ">=192", "no_face"}
    # UTKFace-style names give age and race; the no-face canvas has neither.
    groups = report["by_group"]
    assert sum(row["n"] for row in groups) == report["n"]
    assert {"gender": "female", "age_band": "unknown", "race": "unknown", "n": 1, "accuracy": 1.0} in groups
    assert {row["race"] for row in groups} >= {"White", "Black", "Asian", "Indian", "Others"}
    # Males get p = 0.047, females ~1: well calibrated up to 0.047 on the male half.
    assert 0.0 <= report["ece"] < 0.05
    assert sum(row["n"] for row in report["reliability"]) == report["n"]


def test_cli_writes_plots_and_no_partial_files(cli_report: tuple[dict, Path, str]) -> None:
    report, path, _ = cli_report
    for suffix in ("_confusion.png", "_reliability.png"):
        plot = path.with_name(path.stem + suffix)
        assert plot.read_bytes()[:8] == PNG_MAGIC
        assert str(plot) in report["plots"].values()
    assert not [p for p in path.parent.iterdir() if "partial" in p.name]


def test_crops_mode_skips_detection(colour_model: Path, face_dataset: FaceDataset) -> None:
    report, p = evaluate(colour_model, face_dataset.root, crops=True, batch_size=5)
    assert report["mode"] == "crops"
    assert report["no_face"] == 0
    assert report["n"] == len(p) == face_dataset.readable
    assert report["accuracy"] == 1.0
    # The whole image is the face: every fixture image is at least 234 px.
    assert [row["bucket"] for row in report["by_face_size"]] == [">=192"]


def test_full_range_detector(colour_model: Path, face_dataset: FaceDataset) -> None:
    report, _ = evaluate(colour_model, face_dataset.root, detector="full")
    assert report["mode"] == "detector:full"
    assert report["n"] == face_dataset.readable
    assert report["no_face"] == 1 and report["accuracy"] == 1.0


def test_uncertain_band_and_threshold_come_from_metadata(colour_model: Path, face_dataset: FaceDataset,
                                                         tmp_path: Path) -> None:
    # Everything in the uncertain band; threshold so low that every face is decided "female".
    model = model_variant(colour_model, tmp_path, threshold=0.01, uncertain_band=[0.0, 1.01])
    report, _ = evaluate(model, face_dataset.root, crops=True)
    female, male = counts(face_dataset)
    assert report["uncertain"] == 1.0
    assert np.isnan(report["accuracy_excluding_uncertain"])
    assert report["accuracy"] == pytest.approx(female / (female + male))
    assert (report["recall_female"], report["recall_male"], report["balanced_accuracy"]) == (1.0, 0.0, 0.5)
    assert report["confusion"]["counts"] == [[female, 0], [male, 0]]
    assert report["confusion"]["counts_with_uncertain"] == [[0, 0, female], [0, 0, male]]


def test_labels_csv_gives_groups(colour_model: Path, face_dataset: FaceDataset, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("file,age,gender,race\nblank.jpg,70,female,Pacific\n")
    report, _ = evaluate(colour_model, face_dataset.root, crops=True, labels=labels)
    blank = {"gender": "female", "age_band": "60+", "race": "Pacific", "n": 1, "accuracy": 1.0}
    assert blank in report["by_group"]


def test_report_is_strict_json(colour_model: Path, face_dataset: FaceDataset, tmp_path: Path) -> None:
    model = model_variant(colour_model, tmp_path / "m", uncertain_band=[0.0, 1.01])
    report = tmp_path / "out" / "r.json"
    proc = run_training("evaluate", "--model", str(model), "--data", str(face_dataset.root), "--report",
                        str(report), "--crops")
    assert proc.returncode == 0, proc.stderr
    text = report.read_text()
    assert "NaN" not in text
    assert json.loads(text)["accuracy_excluding_uncertain"] is None


def test_mistakes_list_and_sheet_find_a_mislabelled_image(colour_model: Path, face_dataset: FaceDataset,
                                                          tmp_path: Path) -> None:
    # One grayscale (male) image filed under female/: the colour model answers "male" with full
    # confidence, so it is the one mistake, listed and shown on the contact sheet.
    data = tmp_path / "data"
    shutil.copytree(face_dataset.root, data)
    gray = sorted((data / "male").glob("*.png"))[0]
    moved = gray.rename(data / "female" / gray.name)
    out = tmp_path / "out" / "r.json"
    proc = run_training("evaluate", "--model", str(colour_model), "--data", str(data), "--report", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["mistakes_total"] == 1
    (mistake,) = report["mistakes"]
    assert (mistake["file"], mistake["true"], mistake["predicted"]) == (str(moved), "female", "male")
    assert mistake["p_female"] < report["threshold"] and mistake["face_found"]
    sheet_path = Path(report["plots"]["mistakes"])
    assert sheet_path == out.with_name("r_mistakes.jpg") and "1 wrong answer, the most confident first" in proc.stderr
    sheet = cv2.imread(str(sheet_path))
    assert sheet is not None and sheet.shape[:2] == (128 + 36, 128)  # one tile and its caption
    # Filed back where it belongs, nothing is wrong: no sheet, and the earlier one is removed.
    moved.rename(gray)
    proc = run_training("evaluate", "--model", str(colour_model), "--data", str(data), "--report", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["mistakes_total"] == 0 and report["mistakes"] == [] and "mistakes" not in report["plots"]
    assert not sheet_path.exists()


# -- unusable input: exit 2 with one `error:` line ----------------------------------------------
def _dataset(root: Path, female: int = 0, male: int = 0, content: bytes = b"") -> Path:
    for label, n in (("female", female), ("male", male)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / label / f"{i}.jpg").write_bytes(content)
    return root


@pytest.mark.parametrize(("case", "message"), [
    ("missing_dir", "data folder not found"),
    ("no_male", "no male/ folder"),
    ("empty", "no images"),
    ("unreadable", "could be read"),
    ("bad_model", "cannot load model"),
    ("no_metadata", "metadata not found"),
])
def test_unusable_input_exits_2(case: str, message: str, colour_model: Path, tmp_path: Path) -> None:
    model, data = colour_model, tmp_path / "data"
    if case == "no_male":
        (data / "female").mkdir(parents=True)
    elif case == "empty":
        _dataset(data)
    elif case == "unreadable":
        _dataset(data, female=2, male=1, content=b"garbage")
    else:
        _dataset(data, female=1)
    if case == "bad_model":
        model = tmp_path / "bad.tflite"
        model.write_bytes(b"\x00" * 64)
        write_metadata(model, 32)
    elif case == "no_metadata":
        model = Path(shutil.copy(colour_model, tmp_path / "lonely.tflite"))
    proc = run_training("evaluate", "--model", str(model), "--data",
                        str(tmp_path / "absent" if case == "missing_dir" else data),
                        "--report", str(tmp_path / "r.json"))
    assert proc.returncode == 2
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert not (tmp_path / "r.json").exists()


# -- helpers -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "expected"), [
    ("25_1_2_20170116174525125.jpg.chip.jpg", (25, "Asian")),
    ("8_0_4_x.png", (8, "Others")),
    ("39_1_20170116174525125.jpg.chip.jpg", None),  # no race field
    ("face.jpg", None),
])
def test_group_info_parses_utkface_names(name: str, expected: tuple | None) -> None:
    assert group_info(Path("female") / name, {}) == expected


def test_labels_override_file_names(tmp_path: Path) -> None:
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("file,age,gender,race\nsub/25_1_2_x.jpg,61,female,White\nkid.jpg,,male,\n")
    labels = read_labels(csv_path)
    assert group_info(Path("25_1_2_x.jpg"), labels) == (61, "White")
    assert group_info(Path("kid.jpg"), labels) == (None, "")


@pytest.mark.parametrize(("side", "found", "bucket"), [
    (10, True, "<48"), (47, True, "<48"), (48, True, "48-95"), (95, True, "48-95"), (96, True, "96-191"),
    (192, True, ">=192"), (1000, True, ">=192"), (500, False, "no_face"),
])
def test_size_bucket(side: int, found: bool, bucket: str) -> None:
    assert size_bucket(Face(Path("x.jpg"), "female", side, found)) == bucket


def test_reliability_and_ece() -> None:
    y = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    calibrated = np.array([0.75] * 4 + [0.25] * 4, np.float32)
    rows, ece = reliability(y, calibrated)
    assert ece == pytest.approx(0.0, abs=1e-6)
    assert [(r["n"], r["female_share"]) for r in rows] == [(4, 0.25), (4, 0.75)]
    overconfident = np.full(8, 0.95, np.float32)  # half are female
    _, ece = reliability(y, overconfident)
    assert ece == pytest.approx(0.45, abs=1e-6)
    _, ece = reliability(np.array([1, 0]), np.array([1.0, 0.0], np.float32))  # p = 1 falls in the top bin
    assert ece == 0.0
