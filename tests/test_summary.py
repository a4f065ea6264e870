"""Per-track summary (``realtime/summary.py``, ``python -m realtime --summary``)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from realtime_helpers import assert_one_error, leftovers, read_jsonl, run_realtime, synthetic_frames, write_clip

from realtime.classifier import GenderClassifier, ModelInfo
from realtime.face import Face
from realtime.summary import TrackSummary


def classifier_stub(threshold: float = 0.5, band: tuple[float, float] = (0.4, 0.6)) -> SimpleNamespace:
    """The real label rule (``GenderClassifier.label_for``) on metadata of our choosing."""
    stub = SimpleNamespace(info=ModelInfo(input_size=64, threshold=threshold, uncertain_band=band),
                           model_path=Path("m.tflite"))
    stub.label_for = lambda p: GenderClassifier.label_for(stub, p)  # type: ignore[arg-type]
    if hasattr(GenderClassifier, "decide"):
        stub.decide = lambda p, age=None: GenderClassifier.decide(stub, p, age)  # type: ignore[arg-type]
    return stub


def face(track_id: int, p: float | None, age: float | None = None) -> Face:
    outputs = {name: value for name, value in (("p_female", p), ("apparent_age", age)) if value is not None}
    return Face((10, 10, 50, 50), None, outputs, track_id, 0.9, (5, 5, 60, 60))


def test_records_labels_dwell_and_counts() -> None:
    summary = TrackSummary(source="clip.mp4", bin_s=1.0)
    summary.bind(classifier_stub())
    # track 1: smoothed p ends at 0.9 although it started male-ish; seen at 0.0 .. 1.5 s
    # track 2: ends in the uncertain band; track 3: never classified (live mode); track 4: one frame
    frames = [
        (0.0, [face(1, 0.3), face(2, 0.8), face(3, None)]),
        (0.5, [face(1, 0.6), face(2, 0.55)]),
        (1.0, [face(1, 0.8)]),
        (1.5, [face(1, 0.9), face(4, 0.1, age=31.0)]),
    ]
    for t, faces in frames:
        summary.add(t, faces)
    result = summary.result()
    tracks = {r["track_id"]: r for r in result["tracks"]}
    assert tracks[1] == {"track_id": 1, "label": "female", "reason": None, "p_female": 0.9, "mean_p_female": 0.65,
                         "apparent_age": None, "mean_apparent_age": None, "first_seen_s": 0.0, "last_seen_s": 1.5,
                         "dwell_s": 1.5, "frames_seen": 4}
    assert tracks[2]["label"] == "uncertain" and tracks[2]["p_female"] == 0.55 and tracks[2]["dwell_s"] == 0.5
    assert tracks[2]["mean_p_female"] == pytest.approx(0.675)
    assert tracks[3]["label"] == "uncertain" and tracks[3]["p_female"] is None and tracks[3]["frames_seen"] == 1
    assert tracks[4]["label"] == "male" and tracks[4]["dwell_s"] == 0.0 and tracks[4]["apparent_age"] == 31.0
    assert result["distinct_tracks"] == {"female": 1, "male": 1, "uncertain": 2, "total": 4}
    assert result["frames"] == 4 and result["first_time_s"] == 0.0 and result["last_time_s"] == 1.5
    assert result["threshold"] == 0.5 and result["uncertain_band"] == [0.4, 0.6] and result["model"] == "m.tflite"
    # distinct tracks per 1 s bin, by final label: bin 0 has tracks 1, 2, 3; bin 1 has 1 and 4
    assert result["timeline"] == [{"start_s": 0.0, "female": 1, "male": 0, "uncertain": 2},
                                  {"start_s": 1.0, "female": 1, "male": 1, "uncertain": 0}]
    assert result["dwell_s"] == {"mean": 0.5, "max": 1.5}
    assert "not an identity" in result["note"]


def test_label_follows_the_models_threshold_and_band() -> None:
    summary = TrackSummary()
    summary.bind(classifier_stub(threshold=0.49, band=(0.39, 0.59)))
    summary.add(0.0, [face(1, 0.595), face(2, 0.58), face(3, 0.38)])
    labels = {r["track_id"]: r["label"] for r in summary.result()["tracks"]}
    assert labels == {1: "female", 2: "uncertain", 3: "male"}


def test_child_rule_of_a_model_with_an_age_head() -> None:
    stub = classifier_stub()
    stub.info = ModelInfo(input_size=64, threshold=0.5, uncertain_band=(0.4, 0.6), child_age=13.0)
    summary = TrackSummary()
    summary.bind(stub)
    summary.add(0.0, [face(1, 0.95, age=30.0), face(2, 0.95, age=12.0)])
    summary.add(0.1, [face(1, 0.95, age=32.0), face(2, 0.95, age=9.0)])
    tracks = {r["track_id"]: r for r in summary.result()["tracks"]}
    assert (tracks[1]["label"], tracks[1]["reason"], tracks[1]["apparent_age"]) == ("female", None, 32.0)
    assert tracks[1]["mean_apparent_age"] == 31.0
    assert (tracks[2]["label"], tracks[2]["reason"], tracks[2]["apparent_age"]) == ("uncertain", "child", 9.0)


def test_empty_run() -> None:
    result = TrackSummary(source="x").result()
    assert result["frames"] == 0 and result["tracks"] == [] and result["timeline"] == []
    assert result["distinct_tracks"]["total"] == 0


def test_cli_summary_agrees_with_the_jsonl(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "two.mp4", synthetic_frames(24, (320, 240), faces=2), fps=12.0)
    jsonl, path = tmp_path / "faces.jsonl", tmp_path / "out" / "summary.json"
    proc = run_realtime("--source", str(clip), "--jsonl", str(jsonl), "--summary", str(path), "--sync")
    assert proc.returncode == 0, proc.stderr
    assert f"summary: {path}" in proc.stderr
    summary = json.loads(path.read_text())
    records = read_jsonl(jsonl)
    assert summary["frames"] == len(records) == 24
    assert summary["source"] == str(clip) and summary["model"] == "gender_vgg16_int8.tflite"
    seen: dict[int, list[tuple[float, str]]] = {}
    ages: dict[int, list[float | None]] = {}
    for rec in records:
        for f in rec["faces"]:
            seen.setdefault(f["track_id"], []).append((rec["time_s"], f["label"]))
            ages.setdefault(f["track_id"], []).append(f["apparent_age"])
    assert {t["track_id"] for t in summary["tracks"]} == set(seen)
    assert summary["distinct_tracks"]["total"] == len(seen) >= 2
    for t in summary["tracks"]:
        times = [s for s, _ in seen[t["track_id"]]]
        assert t["frames_seen"] == len(times)
        assert t["first_seen_s"] == min(times) and t["last_seen_s"] == max(times)
        assert t["dwell_s"] == pytest.approx(max(times) - min(times), abs=1e-3)
        assert t["label"] == seen[t["track_id"]][-1][1]  # the label its last frame showed
        assert t["apparent_age"] is not None  # the shipped model has an age head
        assert min(ages[t["track_id"]]) - 0.1 <= t["apparent_age"] <= max(ages[t["track_id"]]) + 0.1
    counts = summary["distinct_tracks"]
    assert counts["female"] + counts["male"] + counts["uncertain"] == counts["total"]
    assert not leftovers(tmp_path)


def test_cli_summary_for_image_folder(face_dataset: object, tmp_path: Path) -> None:
    root = face_dataset.root  # type: ignore[attr-defined]
    path = tmp_path / "s.json"
    proc = run_realtime("--source", str(root), "--output", str(tmp_path / "out"), "--summary", str(path))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(path.read_text())
    assert summary["frames"] == face_dataset.readable  # type: ignore[attr-defined]
    assert summary["distinct_tracks"]["total"] >= len(face_dataset.faces)  # type: ignore[attr-defined]


def test_cli_summary_bad_path(tmp_path: Path) -> None:
    proc = run_realtime("--source", "synthetic:frames=3,size=160x120", "--summary", str(tmp_path))
    assert_one_error(proc, "is a folder")


def test_truncated_video_keeps_a_summary_of_what_decoded(tmp_path: Path) -> None:
    full = write_clip(tmp_path / "full.avi", synthetic_frames(40, (320, 240)), fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    jsonl, path = tmp_path / "cut.jsonl", tmp_path / "cut.json"
    proc = run_realtime("--source", str(cut), "--jsonl", str(jsonl), "--summary", str(path))
    line = assert_one_error(proc, "truncated", f"summary {path}")
    n = len(read_jsonl(jsonl))
    assert 0 < n < 40 and f"({n} lines)" in line
    assert json.loads(path.read_text())["frames"] == n
    assert not leftovers(tmp_path)
