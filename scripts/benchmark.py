#!/usr/bin/env python3
"""Benchmark the realtime pipeline: FPS, per-stage ms, first-frame time, peak RSS.

The frames go through ``realtime.pipeline.run`` exactly as in ``python -m realtime``, minus the window
and the output files: decode, detect, track, classify and draw are all timed; nothing is shown or
written. The result is a markdown table on stdout and, with ``--json``, a JSON report.

Examples:
  python scripts/benchmark.py --source synthetic:faces=1,frames=300,size=640x480 --sync --classify-every-frame
  python scripts/benchmark.py --source synthetic:faces=3,frames=300 --json out/bench.json
  python scripts/benchmark.py --source assets/face-demographics-walking-and-pause.mp4 --loop --frames 300
  python scripts/benchmark.py --source synthetic:faces=2,frames=300 --compare   (sync/async x every/cached)
  python scripts/benchmark.py --source assets/face-demographics-walking-and-pause.mp4 --soak 600
  python scripts/benchmark.py --macs                                             (VGG16 conv MACs by size)

``--compare`` runs each configuration in a fresh process, so first-frame time and peak RSS are per
configuration. Exit status: 0 on success, 2 on unusable input (one ``error:`` line on stderr).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python scripts/benchmark.py` from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from realtime.cli import positive_float, positive_int, report_user_error, setup_logging  # noqa: E402 - after sys.path
from realtime.config import add_pipeline_args  # noqa: E402
from realtime.errors import UserError  # noqa: E402
from realtime.machine import CPU_FLAGS, cpu_info  # noqa: E402,F401 - CPU_FLAGS re-exported for tests
from realtime.sinks import check_writable  # noqa: E402

log = logging.getLogger("benchmark")

STAGES = ("decode", "detect", "classify", "draw", "total")
# VGG16 feature extractor: (output channels, convs) per block, 3x3 "same" convs, 2x2 max-pool after each.
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
COMPARE = (("sync", True), ("sync", False), ("async", True), ("async", False))


@dataclass(frozen=True)
class Setup:
    """One benchmark configuration."""

    mode: str  # auto | sync | async
    every_frame: bool

    @property
    def label(self) -> str:
        return f"{self.mode}+{'every-frame' if self.every_frame else 'cached'}"


# --- measurements that need no pipeline --------------------------------------------------------
def vgg16_conv_macs(size: int) -> int:
    """Multiply-accumulates of VGG16's 13 conv layers for a ``size`` x ``size`` x 3 input."""
    macs, side, channels = 0, size, 3
    for out_channels, convs in VGG16_BLOCKS:
        for _ in range(convs):
            macs += side * side * out_channels * 3 * 3 * channels
            channels = out_channels
        side //= 2
    return macs


def _proc_status_mb(key: str) -> float | None:
    """``VmRSS``/``VmHWM`` of this process in MB (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process. VmHWM first: ru_maxrss survives exec() on Linux, so a
    child started from a big parent would report the parent's peak."""
    hwm = _proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def process_age_s() -> float | None:
    """Seconds since this process started (Linux), so first-frame time includes the imports."""
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("ai-edge-litert", "mediapipe", "opencv-contrib-python", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def model_info(model: Path) -> dict[str, Any]:
    from realtime.classifier import ModelInfo, metadata_path

    if not model.is_file():
        raise UserError(f"gender model not found: {model} (export one with `python -m training export` "
                        "or pass --model)")
    info = ModelInfo.from_json(metadata_path(model))
    arch = str((info.raw or {}).get("architecture", ""))
    out: dict[str, Any] = {"input_size": info.input_size, "mb": round(model.stat().st_size / 1e6, 2),
                           "sha256": hashlib.sha256(model.read_bytes()).hexdigest()[:16],
                           "outputs": sorted(info.outputs) if info.outputs else ["p_female"],
                           "flip_average": info.flip_average,
                           "architecture": arch or None}
    if "vgg16" in arch.lower():
        out["conv_gmacs"] = round(vgg16_conv_macs(info.input_size) / 1e9, 3)
    return out


class FrameClock:
    """``on_frame`` callback for ``realtime.pipeline.run``: notes when frames finish, samples RSS
    every ``interval_s`` seconds (soak), and stops the run after ``limit_s`` seconds."""

    def __init__(self, limit_s: float | None = None, interval_s: float | None = None) -> None:
        self.limit_s, self.interval_s = limit_s, interval_s
        self.start = time.perf_counter()
        self.first: float | None = None
        self.last: float | None = None
        self.samples: list[tuple[float, float]] = []  # (seconds since start, RSS MB)
        self._next_sample = 0.0

    def sample(self) -> None:
        rss = _proc_status_mb("VmRSS")
        if rss is not None:
            self.samples.append((round(time.perf_counter() - self.start, 2), round(rss, 1)))

    def __call__(self, frames_done: int, total: int | None) -> bool:
        now = time.perf_counter()
        self.first = now if self.first is None else self.first
        self.last = now
        go_on = self.limit_s is None or now - self.start < self.limit_s
        if self.interval_s is not None and (now - self.start >= self._next_sample or not go_on):
            self.sample()  # the last sample is taken before the pipeline closes and frees memory
            self._next_sample = now - self.start + self.interval_s
        return go_on

    def fps(self, frames: int) -> float | None:
        """Steady-state rate: the frames after the first (which pays for warm-up) over their time."""
        if frames < 2 or self.first is None or self.last is None or self.last <= self.first:
            return None
        return (frames - 1) / (self.last - self.first)


def rss_trend(samples: Sequence[tuple[float, float]], after_s: float) -> dict[str, Any]:
    """Start/end/max RSS and the least-squares slope (MB per minute) of the samples after warm-up."""
    steady = [s for s in samples if s[0] >= after_s] or list(samples)
    out: dict[str, Any] = {"rss_start_mb": steady[0][1] if steady else None,
                           "rss_end_mb": steady[-1][1] if steady else None,
                           "rss_max_mb": max(s[1] for s in samples) if samples else None,
                           "rss_slope_mb_per_min": None}
    if len(steady) >= 3:
        n = len(steady)
        mt = sum(t for t, _ in steady) / n
        mr = sum(r for _, r in steady) / n
        var = sum((t - mt) ** 2 for t, _ in steady)
        if var > 0:
            slope = sum((t - mt) * (r - mr) for t, r in steady) / var
            out["rss_slope_mb_per_min"] = round(slope * 60.0, 3)
    return out


# --- one configuration, in this process -----------------------------------------------------------
def measure(args: argparse.Namespace, setup: Setup) -> dict[str, Any]:
    """Run the pipeline once (``--frames`` frames, or ``--soak`` seconds) and report."""
    from realtime.face_detector import resolve_backend
    from realtime.pipeline import Config, choose_detector, run
    from realtime.sources import open_source

    info = model_info(args.model)
    source = open_source(args.source)  # not opened: only to name the detector `auto` picks
    soak = args.soak is not None
    config = Config(source=args.source, display=False, model=args.model, detector=args.detector,
                    detector_backend=args.detector_backend, threads=args.threads, mode=setup.mode,
                    classify_every_frame=setup.every_frame,
                    max_age_s=args.max_age, progress=not args.no_progress,
                    loop=args.loop or soak, max_frames=None if soak else args.frames, contact_sheet=False)
    interval = (args.interval or min(30.0, max(1.0, args.soak / 20.0))) if soak else None
    age_at_run = process_age_s()  # imports and model checks so far; run() adds the rest
    clock = FrameClock(args.soak, interval)
    stats = run(config, on_frame=clock)
    if stats.frames == 0:
        raise UserError(f"no frames from {args.source}")
    fps = clock.fps(stats.frames) or stats.fps
    first = stats.first_frame_s
    report: dict[str, Any] = {
        "source": args.source,
        "mode": setup.mode if setup.mode != "auto" else ("async" if source.live else "sync"),
        "cache": "every-frame" if setup.every_frame else "cached",
        "frames": stats.frames,
        "fps": round(fps, 2),
        "ms": {k: stats.timing.get(k, 0.0) for k in STAGES},
        "first_frame_s": round(first + (age_at_run or 0.0), 3) if first is not None else None,
        "first_frame_in_run_s": round(first, 3) if first is not None else None,
        "faces_per_frame": round(stats.faces / stats.frames, 3),
        "classifications": stats.classified,
        "classifications_per_frame": round(stats.classified / stats.frames, 3),
        "rss_mb": round(peak_rss_mb(), 1),
        "seconds": round(stats.seconds, 2),
        "model": str(args.model),
        "model_info": info,
        "detector": choose_detector(args.detector, source),
        "detector_backend": resolve_backend(args.detector_backend),
        "threads": args.threads,
        "max_age_s": args.max_age,
        "cpu": cpu_info(),
        "versions": versions(),
        "interrupted": stats.interrupted,
    }
    if soak:
        report["soak"] = {"seconds": args.soak, "interval_s": interval,
                          **rss_trend(clock.samples, after_s=first or 0.0),
                          "samples": [list(s) for s in clock.samples]}
    return report


# --- several configurations, one process each ---------------------------------------------------
def compare(args: argparse.Namespace) -> dict[str, Any]:
    model_info(args.model)  # fail here, once, rather than in every child
    runs = []
    with tempfile.TemporaryDirectory(prefix="benchmark-") as tmp:
        for mode, every in COMPARE:
            setup = Setup(mode, every)
            out = Path(tmp) / f"{setup.label}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--source", args.source,
                   "--frames", str(args.frames), "--threads", str(args.threads), "--model", str(args.model),
                   "--detector", args.detector, "--detector-backend", args.detector_backend,
                   "--max-age", str(args.max_age), f"--{mode}",
                   "--json", str(out)]
            cmd += ["--classify-every-frame"] if every else []
            cmd += ["--loop"] if args.loop else []
            cmd += ["--no-progress"] if args.no_progress else []
            cmd += ["--quiet"] if args.quiet else []
            log.info("running %s", setup.label)
            done = subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False)  # its stderr: progress, errors
            if done.returncode != 0:
                raise SystemExit(done.returncode)  # the child already printed its one `error:` line
            runs.append(json.loads(out.read_text()))
    default = next(r for r in runs if r["mode"] == "sync" and r["cache"] == "cached")
    return {**default, "compare": runs}


# --- output ---------------------------------------------------------------------------------------
def table(runs: Sequence[dict[str, Any]]) -> str:
    head = ("| mode | cache | FPS | decode ms | detect ms | classify ms | draw ms | total ms | faces/frame "
            "| classified/frame | first frame s | peak RSS MB |")
    rows = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in runs:
        ms = r["ms"]
        rows.append(f"| {r['mode']} | {r['cache']} | {r['fps']:.1f} | "
                    + " | ".join(f"{ms[k]:.2f}" for k in STAGES)
                    + f" | {r['faces_per_frame']:.2f} | {r['classifications_per_frame']:.2f} "
                      f"| {r['first_frame_s']:.2f} | {r['rss_mb']:.0f} |")
    return "\n".join(rows)


def soak_table(report: dict[str, Any]) -> str:
    soak = report["soak"]
    slope = soak["rss_slope_mb_per_min"]
    lines = [f"soak {soak['seconds']:.0f} s, {report['frames']} frames ({report['fps']:.1f} FPS): RSS start "
             f"{soak['rss_start_mb']} MB, end {soak['rss_end_mb']} MB, max {soak['rss_max_mb']} MB, slope "
             f"{'n/a' if slope is None else f'{slope:+.3f}'} MB/min", "", "| t s | RSS MB |", "|---|---|"]
    samples = soak["samples"]
    step = max(1, len(samples) // 20)
    shown = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    lines += [f"| {t:.0f} | {rss:.1f} |" for t, rss in shown]
    return "\n".join(lines)


def macs_table(sizes: Sequence[int] = (64, 96, 128, 160, 224)) -> str:
    rows = ["| input px | VGG16 conv GMACs | vs 64 px |", "|---|---|---|"]
    base = vgg16_conv_macs(64)
    rows += [f"| {s} | {vgg16_conv_macs(s) / 1e9:.2f} | {vgg16_conv_macs(s) / base:.2f}x |" for s in sizes]
    return "\n".join(rows)


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {folder}: {exc.strerror or exc}") from exc


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write the report atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from exc


# --- CLI ------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one `error:` line, exit 2 (argparse prints usage too)
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python scripts/benchmark.py", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", help="anything `python -m realtime --source` takes, e.g. a clip or "
                   "synthetic:faces=3,frames=300,size=640x480")
    p.add_argument("--frames", type=positive_int, default=300, help="frames to process (default 300)")
    p.add_argument("--loop", action="store_true", help="restart a short clip until --frames are done")
    p.add_argument("--json", type=Path, help="write the report here")
    add_pipeline_args(p, include=("model", "detector", "detector_backend", "threads", "max_age", "mode",
                                  "classify_every_frame"))
    what = p.add_mutually_exclusive_group()
    what.add_argument("--compare", action="store_true",
                      help="sync vs async x every-frame vs cached, one fresh process each, side by side")
    what.add_argument("--soak", type=positive_float, metavar="SECONDS",
                      help="loop the source this long and sample RSS (memory growth check); ignores --frames")
    what.add_argument("--macs", action="store_true", help="print VGG16 conv MACs per input size and exit")
    p.add_argument("--interval", type=positive_float, metavar="SECONDS",
                   help="RSS sample interval for --soak (default soak/20, 1-30 s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if args.macs:
        print(macs_table())
        return 0
    if not args.source:
        parser.error("--source is required")
    if args.compare and (args.mode != "auto" or args.classify_every_frame):
        parser.error("--compare runs all modes itself; drop --sync/--async/--classify-every-frame")
    try:
        if args.json is not None:  # fail before the run, not after it
            check_writable(args.json)
            _mkdir(args.json.parent)
        report = compare(args) if args.compare else measure(args, Setup(args.mode, args.classify_every_frame))
        if args.json is not None:
            write_json(args.json, report)
    except UserError as exc:
        return report_user_error(exc, args.verbose)
    cpu = report["cpu"]
    print(f"{cpu['name']}, {cpu['cores']} cores ({', '.join(cpu['flags']) or 'no SIMD flags found'}); "
          f"model {Path(report['model']).name} {report['model_info']['input_size']} px, "
          f"detector {report['detector']} on {report['detector_backend']}, {report['threads']} threads; "
          f"source {report['source']}\n")
    print(table(report.get("compare", [report])))
    if "soak" in report:
        print("\n" + soak_table(report))
    return 130 if report.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
