"""scripts/benchmark.py: the JSON report of docs/architecture.md (contract 3), --compare, --soak, errors.

The gender model is the shipped one when it exists, else the tiny test model of ``conftest.py``
(needs TensorFlow to build; the tests that need a model are skipped without either).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "scripts" / "benchmark.py"
SHIPPED_MODEL = REPO_ROOT / "models" / "gender_vgg16_int8.tflite"
STAGES = {"decode", "detect", "classify", "draw", "total"}
CONTRACT = {"fps", "ms", "rss_mb", "model", "cpu", "first_frame_s", "faces_per_frame", "classifications",
            "mode"}


@pytest.fixture(scope="module")
def gender_model(request: pytest.FixtureRequest) -> Path:
    """The shipped model if it is there, else conftest's tiny model (skips without TensorFlow)."""
    if SHIPPED_MODEL.is_file():
        return SHIPPED_MODEL
    return request.getfixturevalue("colour_model")


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    """scripts/benchmark.py imported as a module (it is a script, not part of a package)."""
    name = "benchmark_script"
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)


def run_benchmark(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args, "--no-progress"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def check_run(report: dict, frames: int) -> None:
    assert set(report) >= CONTRACT, CONTRACT - set(report)
    assert report["frames"] == frames
    assert 0 < report["fps"] < 100_000
    assert set(report["ms"]) >= STAGES
    assert all(v >= 0 for v in report["ms"].values())
    parts = sum(report["ms"][k] for k in ("decode", "detect", "classify", "draw"))
    assert report["ms"]["total"] >= parts - 0.01 and report["ms"]["detect"] > 0
    assert 20 < report["rss_mb"] < 4000
    assert 0 < report["first_frame_s"] < 120
    assert report["first_frame_in_run_s"] <= report["first_frame_s"]
    assert 0 <= report["faces_per_frame"] <= 3
    assert report["classifications"] >= 0
    assert report["mode"] in ("sync", "async") and report["cache"] in ("every-frame", "cached")
    cpu = report["cpu"]
    assert cpu["name"] and cpu["cores"] >= 1 and isinstance(cpu["flags"], list)
    assert report["model_info"]["input_size"] > 0


def test_json_report_has_the_contract_keys(gender_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "bench.json"
    done = run_benchmark("--source", "synthetic:faces=1,frames=20", "--frames", "20", "--json", str(out),
                         "--model", str(gender_model), "--sync", "--classify-every-frame")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    check_run(report, 20)
    assert report["mode"] == "sync" and report["cache"] == "every-frame"
    assert report["model"] == str(gender_model)
    assert report["faces_per_frame"] > 0.5  # the synthetic face is found
    # Every face on every frame was classified, in-line.
    assert report["classifications"] == round(report["faces_per_frame"] * report["frames"])
    assert "| mode | cache | FPS |" in done.stdout and "| sync | every-frame |" in done.stdout
    assert not list(out.parent.glob(".*partial*"))


def test_compare_runs_all_four_configurations(gender_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    done = run_benchmark("--source", "synthetic:faces=1,frames=12", "--frames", "12", "--compare",
                         "--json", str(out), "--model", str(gender_model))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    runs = report["compare"]
    assert [(r["mode"], r["cache"]) for r in runs] == [
        ("sync", "every-frame"), ("sync", "cached"), ("async", "every-frame"), ("async", "cached")]
    for run in runs:
        check_run(run, 12)
    sync_every, sync_cached = runs[0], runs[1]
    assert sync_cached["classifications"] < sync_every["classifications"]  # the cache saves work
    assert (report["mode"], report["cache"]) == ("sync", "cached")  # top level: the default for a clip
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| sync ", "| async "))]
    assert len(rows) == 4


def test_soak_reports_rss_over_time(gender_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = run_benchmark("--source", "synthetic:faces=1,frames=10", "--soak", "2", "--interval", "0.5",
                         "--json", str(out), "--model", str(gender_model))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    soak = report["soak"]
    assert report["frames"] > 10  # the 10-frame source was looped
    assert len(soak["samples"]) >= 3
    assert soak["rss_start_mb"] > 0 and soak["rss_max_mb"] >= soak["rss_end_mb"]
    assert isinstance(soak["rss_slope_mb_per_min"], float)
    assert "RSS start" in done.stdout


def test_unusable_source_is_one_error_line(gender_model: Path, tmp_path: Path) -> None:
    done = run_benchmark("--source", str(tmp_path / "missing.mp4"), "--model", str(gender_model))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: no such file or folder: {tmp_path / 'missing.mp4'}"]


def test_missing_model_is_one_error_line(tmp_path: Path) -> None:
    done = run_benchmark("--source", "synthetic:faces=1,frames=5", "--model", str(tmp_path / "none.tflite"))
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: gender model not found") and "none.tflite" in line


def test_bad_arguments_are_one_error_line() -> None:
    for args in (["--source", "synthetic", "--frames", "0"], ["--frames", "5"],
                 ["--source", "synthetic", "--compare", "--sync"]):
        done = run_benchmark(*args)
        assert done.returncode == 2, args
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("error: "), line


def test_vgg16_conv_macs(bench: ModuleType) -> None:
    assert bench.vgg16_conv_macs(224) == 15_346_630_656  # the well-known 15.3 GMACs of VGG16's convs
    assert bench.vgg16_conv_macs(64) == 1_252_786_176
    assert bench.vgg16_conv_macs(128) == 4 * bench.vgg16_conv_macs(64)  # cost grows with the square
    done = run_benchmark("--macs")
    assert done.returncode == 0 and "| 96 | 2.82 |" in done.stdout


def test_rss_trend(bench: ModuleType) -> None:
    growing = [(float(t), 200.0 + t) for t in range(0, 61, 5)]  # +1 MB per second
    trend = bench.rss_trend(growing, after_s=0.0)
    assert trend["rss_slope_mb_per_min"] == pytest.approx(60.0)
    assert (trend["rss_start_mb"], trend["rss_end_mb"], trend["rss_max_mb"]) == (200.0, 260.0, 260.0)
    flat = [(0.0, 150.0), (1.0, 210.0)] + [(float(t), 210.0) for t in range(2, 30)]  # warm-up, then flat
    assert bench.rss_trend(flat, after_s=1.0)["rss_slope_mb_per_min"] == pytest.approx(0.0)


def test_cpu_info(bench: ModuleType) -> None:
    info = bench.cpu_info()
    assert info["name"] and info["cores"] >= 1 and info["machine"]
    assert set(info["flags"]) <= set(bench.CPU_FLAGS)
