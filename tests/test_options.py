"""One definition of the pipeline options (realtime/config.py), used by every front end."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from realtime_helpers import REPO_ROOT, synthetic_frames, write_clip

from realtime.config import PipelineConfig, pipeline_kwargs


def parsers() -> dict[str, argparse.ArgumentParser]:
    import importlib.util

    from realtime import batch
    from realtime.__main__ import build_parser as cli
    from training.__main__ import build_parser as training

    out = {"face-gender": cli(), "face-gender-batch": batch.build_parser()}
    if importlib.util.find_spec("fastapi") is not None:
        from realtime.web.__main__ import build_parser as web

        out["face-gender-web"] = web()
    name = "benchmark_options_test"
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / "benchmark.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[name] = bench  # dataclasses look their module up there
    try:
        spec.loader.exec_module(bench)
        out["benchmark"] = bench.build_parser()
    finally:
        sys.modules.pop(name, None)
    sub = next(a for a in training()._actions if isinstance(a, argparse._SubParsersAction))
    out["training evaluate"] = sub.choices["evaluate"]
    return out


def test_every_front_end_checks_the_shared_flags_the_same_way() -> None:
    for name, parser in parsers().items():
        with pytest.raises(SystemExit) as info:
            parser.parse_args(["--threads", "100000"])  # the native library crashes on such counts
        assert info.value.code == 2, name
        with pytest.raises(SystemExit):
            parser.parse_args(["--detector-backend", "banana"])
        backend = next(a for a in parser._actions if "--detector-backend" in a.option_strings)
        assert set(backend.choices) == {"auto", "litert", "mediapipe"}, name


def test_config_from_the_flags_and_privacy_implies_blur() -> None:
    from realtime.__main__ import build_parser

    args = build_parser().parse_args(["--source", "x", "--privacy", "--max-age", "3", "--sync", "--threads", "1"])
    config = PipelineConfig.from_args(args)
    assert config.privacy and config.blur and config.max_age_s == 3.0 and config.mode == "sync"
    assert config.threads == 1
    assert "source" not in pipeline_kwargs(args)
    assert PipelineConfig(privacy=True).blur


@pytest.mark.slow
def test_batch_blurs_and_keeps_privacy_like_the_cli(tmp_path: Path, colour_model: Path) -> None:
    videos = tmp_path / "in"
    videos.mkdir()
    write_clip(videos / "a.mp4", synthetic_frames(6, (320, 240)), fps=10.0)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "realtime.batch", "--input", str(videos), "--output", str(out),
                           "--privacy", "--no-progress", "--workers", "1", "--model", str(colour_model)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in (out / "a" / "faces.jsonl").read_text().splitlines()]
    faces = [f for r in records for f in r["faces"]]
    assert faces and all("box" not in f and "detector_score" not in f for f in faces)


def test_batch_carries_a_typed_pipeline_config() -> None:
    """face-gender-batch builds the same PipelineConfig from the same flags (no untyped dict), and
    without --model each worker runs the model its own installation ships."""
    from dataclasses import replace

    from realtime.batch import build_parser, options_from_args
    from realtime.batch.task import config_here
    from realtime.paths import GENDER_MODEL

    args = build_parser().parse_args(["--input", "x", "--output", "y", "--privacy", "--sync", "--threads", "1",
                                      "--max-age", "3", "--max-frames", "4"])
    opts = options_from_args(args)
    assert isinstance(opts.pipeline, PipelineConfig)
    assert opts.pipeline == PipelineConfig.from_args(args, detector_threads=1)
    assert opts.pipeline.blur and opts.pipeline.mode == "sync" and opts.pipeline.max_age_s == 3.0
    assert opts.max_frames == 4 and opts.shipped_model and "model" not in opts.options_record()
    elsewhere = replace(opts.pipeline, model=Path("/elsewhere/model.tflite"))  # the driver's path on another node
    assert config_here(elsewhere, shipped_model=True).model == GENDER_MODEL
    assert config_here(elsewhere, shipped_model=False).model == Path("/elsewhere/model.tflite")
    given = options_from_args(build_parser().parse_args(["--input", "x", "--output", "y", "--model", "m.tflite"]))
    assert not given.shipped_model and given.pipeline.model == Path("m.tflite").resolve()
    assert given.options_record()["model"] == str(Path("m.tflite").resolve())
