#!/usr/bin/env python3
"""Measure the batch driver (``face-gender-batch``) into docs/measurements/batch_*.json.

  python scripts/batch_bench.py scaling --out docs/measurements/batch_scaling.json
  python scripts/batch_bench.py demo --out docs/measurements/batch_demo_tracks.json --people-by-eye 3
  python scripts/render_docs.py        (puts the numbers into docs/batch.md)

``scaling`` makes short clips from the bundled demo clip (each the clip played forwards and
backwards, so people keep moving) and runs ``python -m realtime.batch`` on them as separate processes:
1 local worker, 2 local workers, 2 local workers with 2 threads each (oversubscribed), and Ray on
this machine with 2 CPUs; interleaved, ``--runs`` times, best wall time kept. ``demo`` runs the demo
clip with ``--summary`` and records its tracks. :data:`RENDERERS` turn those JSON files into the
``<!-- measured:batch-NAME -->`` blocks of docs/batch.md; ``scripts/render_docs.py`` (the one
renderer of every measured block) uses them, and ``--check`` there reports stale blocks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python scripts/batch_bench.py` from anywhere
    sys.path.insert(0, str(REPO_ROOT))
from realtime.cli import setup_logging  # noqa: E402  (after the repo is on the path)
from realtime.machine import cpu_info  # noqa: E402
from realtime.paths import DEMO_CLIP, GENDER_MODEL  # noqa: E402

log = logging.getLogger("batch_bench")

MEASURED = REPO_ROOT / "docs" / "measurements"

CONFIGS: dict[str, dict[str, Any]] = {
    "local1": {"name": "local, 1 worker", "args": ["--workers", "1"], "workers": 1, "threads": 1},
    "local2": {"name": "local, 2 workers", "args": ["--workers", "2"], "workers": 2, "threads": 1},
    "local2x2": {"name": "local, 2 workers x 2 threads", "args": ["--workers", "2", "--threads", "2"], "workers": 2,
                 "threads": 2},
    "ray": {"name": "Ray local, 2 CPUs", "args": ["--workers", "2", "--ray", "local"], "workers": 2, "threads": 1},
    # No driver: plain processes running the same pipeline over their share of the clips, one after
    # the other: what the machine gives for the same work (the ceiling of any driver).
    "plain1": {"name": "no driver: 1 process", "plain": 1, "workers": 1, "threads": 1},
    "plain2": {"name": "no driver: 2 processes at once", "plain": 2, "workers": 2, "threads": 1},
}

PLAIN = """
import sys
from pathlib import Path
from realtime.pipeline import Config, run
out = Path(sys.argv[1])
for clip in sys.argv[2:]:
    name = Path(clip).stem
    run(Config(source=clip, output=out / (name + ".mp4"), jsonl=out / (name + ".jsonl"), display=False,
               progress=False, threads=1, detector_threads=1, mode="sync"))
"""


def _plain(inputs: Path, output: Path, processes: int) -> tuple[float, int]:
    clips = sorted(str(p) for p in inputs.glob("*.mp4"))
    output.mkdir(parents=True)
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", PLAIN, str(output), *clips[i::processes]], cwd=REPO_ROOT)
             for i in range(processes)]
    if any(proc.wait(timeout=900) != 0 for proc in procs):
        raise SystemExit("error: a plain pipeline process failed")
    wall = time.perf_counter() - t0
    frames = sum(len(p.read_text().splitlines()) for p in output.glob("*.jsonl"))
    return wall, frames


def machine() -> dict[str, Any]:
    cpu = cpu_info()
    name, cores = cpu["name"], cpu["cores"]
    try:
        import ray

        ray_version = ray.__version__
    except ImportError:
        ray_version = None
    return {"cpu": name, "cores": cores, "python": platform.python_version(), "ray": ray_version}


def model_info(path: Path) -> dict[str, Any]:
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}


def make_clips(folder: Path, count: int, repeats: int) -> dict[str, Any]:
    import cv2

    cap = cv2.VideoCapture(str(DEMO_CLIP))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    fps = cap.get(cv2.CAP_PROP_FPS) or 12.0
    cap.release()
    h, w = frames[0].shape[:2]
    for i in range(count):
        writer = cv2.VideoWriter(str(folder / f"clip{i:02d}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        for r in range(repeats):
            for frame in frames if r % 2 == 0 else frames[::-1]:
                writer.write(frame)
        writer.release()
    return {"count": count, "frames_each": len(frames) * repeats, "size": [w, h], "fps": fps,
            "made_from": f"{DEMO_CLIP.name}, played forwards and backwards {repeats} times"}


def _batch(inputs: Path, output: Path, extra: list[str]) -> tuple[float, dict[str, Any]]:
    cmd = [sys.executable, "-m", "realtime.batch", "--input", str(inputs), "--output", str(output),
           "--no-progress", "-q", "--no-report", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return wall, json.loads((output / "summary.json").read_text())


def scaling(args: argparse.Namespace) -> dict[str, Any]:
    """Rounds of the chosen configurations, interleaved; with --append, more rounds on top of the
    ones already in --out (each call can wait for its own quiet moment)."""
    previous = json.loads(args.out.read_text()) if args.append and args.out.is_file() else None
    load_before = [round(v, 2) for v in os.getloadavg()]
    results = {CONFIGS[k]["name"]: {**CONFIGS[k], "wall_s": [], "ray_start_each_s": [], "processing_s_mean": []}
               for k in args.configs}
    if previous is not None:
        if [row["name"] for row in previous["rows"]] != list(results):
            raise SystemExit(f"error: --append: {args.out} has other configurations")
        for row in previous["rows"]:
            r = results[row["name"]]
            r["wall_s"] = list(row["wall_s"])
            r["ray_start_each_s"] = list(row.get("ray_start_each_s") or [])
            r["processing_s_mean"] = list(row.get("processing_s_per_video_mean") or [])
    with tempfile.TemporaryDirectory(prefix="batch-bench-") as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        clips = make_clips(inputs, args.clips, args.repeats)
        if previous is not None and previous["clips"] != clips:
            raise SystemExit(f"error: --append: {args.out} was measured on other clips")
        for run in range(args.runs):
            for key, (name, r) in zip(args.configs, results.items()):
                out_dir = Path(tmp) / f"out-{run}-{key}"
                if "plain" in r:
                    wall, r["frames"] = _plain(inputs, out_dir, r["plain"])
                else:
                    wall, agg = _batch(inputs, out_dir, r["args"])
                    r["frames"] = agg["totals"]["frames"]
                    if agg.get("ray_start_s") is not None:
                        r["ray_start_each_s"].append(agg["ray_start_s"])
                    r["processing_s_mean"].append(
                        round(sum(v["processing_s"] or 0 for v in agg["videos"]) / len(agg["videos"]), 3))
                r["wall_s"].append(round(wall, 3))
                log.info("%s: %.2f s", name, wall)
    rows = []
    for r in results.values():
        best = min(r["wall_s"])
        rows.append({"name": r["name"], "command_args": r.get("args"), "workers": r["workers"], "threads": r["threads"],
                     "wall_s": r["wall_s"], "best_wall_s": best, "frames": r["frames"],
                     "throughput_fps": round(r["frames"] / best, 2), "ray_start_each_s": r["ray_start_each_s"],
                     "ray_start_s": min(r["ray_start_each_s"]) if r["ray_start_each_s"] else None,
                     "processing_s_per_video_mean": r["processing_s_mean"] or None})
    by = {row["name"]: row for row in rows}
    one, two = by.get(CONFIGS["local1"]["name"]), by[CONFIGS["local2"]["name"]]
    commands = (previous or {}).get("commands", [])
    out: dict[str, Any] = {
        "command": (f"python scripts/batch_bench.py scaling --configs {' '.join(args.configs)} --clips {args.clips} "
                    f"--repeats {args.repeats}" + ("" if args.out == MEASURED / "batch_scaling.json" else
                                                   f" --out docs/measurements/{args.out.name}")),
        "commands": [*commands, {"argv": sys.argv[2:], "load_average_before": load_before, "runs": args.runs}],
        "machine": machine(), "model": model_info(Path(args.model)), "detector": "full-range BlazeFace on LiteRT",
        "clips": clips, "runs": len(two["wall_s"]), "load_average_before": load_before,
        "note": args.note, "rows": rows,
    }
    if one is not None:  # per interleaved round (same moment, same noise) and best against best
        out["speedup_2_vs_1"] = round(two["throughput_fps"] / one["throughput_fps"], 3)
        out["speedup_2_vs_1_per_run"] = [round(a / b, 3) for a, b in zip(one["wall_s"], two["wall_s"])]
    p1, p2 = by.get(CONFIGS["plain1"]["name"]), by.get(CONFIGS["plain2"]["name"])
    if p1 is not None and p2 is not None:
        out["machine_speedup_2_vs_1"] = round(p2["throughput_fps"] / p1["throughput_fps"], 3)
        out["machine_speedup_2_vs_1_per_run"] = [round(a / b, 3) for a, b in zip(p1["wall_s"], p2["wall_s"])]
    ray_row = by.get(CONFIGS["ray"]["name"])
    if ray_row is not None:
        out["ray_start_s"] = ray_row["ray_start_s"]
        out["ray_overhead_per_video_s"] = round(
            (ray_row["best_wall_s"] - ray_row["ray_start_s"] - two["best_wall_s"]) / clips["count"], 3)
    return out


def cluster(args: argparse.Namespace) -> dict[str, Any]:
    """``ray start --head`` on this machine (a one-node cluster), then the batch joins it with --ray auto.
    Stops that cluster with ``ray stop`` at the end (which stops every Ray process of this machine)."""
    ray_cli = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="batch-bench-") as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        clips = make_clips(inputs, args.clips, args.repeats)
        t0 = time.perf_counter()
        subprocess.run([ray_cli, "start", "--head", "--num-cpus", "2", "--port", str(args.port), "--include-dashboard",
                        "false", "--disable-usage-stats"], env=env, capture_output=True, text=True, check=True,
                       timeout=300)
        head_start_s = time.perf_counter() - t0
        try:
            runs = []
            for run in range(args.runs):
                wall, agg = _batch(inputs, Path(tmp) / f"out-{run}", ["--ray", "auto"])
                runs.append({"wall_s": round(wall, 3), "join_s": agg["ray_start_s"], "frames": agg["totals"]["frames"],
                             "workers": sorted({v["worker"].split(":")[0] for v in agg["videos"]})})
                log.info("cluster run %d: %.2f s", run, wall)
        finally:
            subprocess.run([ray_cli, "stop"], env=env, capture_output=True, timeout=120, check=False)
    best = min(runs, key=lambda r: r["wall_s"])
    return {"command": f"python scripts/batch_bench.py cluster --clips {args.clips} --repeats {args.repeats} "
                       f"--runs {args.runs}",
            "machine": machine(), "model": model_info(Path(args.model)), "clips": clips,
            "load_average_before": [round(v, 2) for v in load_before], "note": args.note,
            "head_start_s": round(head_start_s, 3), "runs": runs, "best_wall_s": best["wall_s"],
            "join_s": min(r["join_s"] for r in runs), "throughput_fps": round(best["frames"] / best["wall_s"], 2)}


def demo(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="batch-demo-") as tmp:
        path = Path(tmp) / "summary.json"
        cmd = [sys.executable, "-m", "realtime", "--source", str(DEMO_CLIP), "--summary", str(path), "--sync",
               "--no-display", "--no-progress", "-q", "--model", str(args.model)]
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"error: {' '.join(cmd)}: {proc.stderr[-2000:]}")
        summary = json.loads(path.read_text())
    tracks = summary["distinct_tracks"]["total"]
    return {"command": f"python -m realtime --source assets/{DEMO_CLIP.name} --summary S.json --sync",
            "machine": machine(), "model": model_info(Path(args.model)), "clip": DEMO_CLIP.name,
            "frames": summary["frames"], "seconds": summary["last_time_s"],
            "distinct_tracks": summary["distinct_tracks"],
            "tracks": summary["tracks"], "people_by_eye": args.people_by_eye,
            "people_by_eye_how": "counted by looking at the clip's frames",
            "extra_tracks": tracks - args.people_by_eye}


# --- rendering -------------------------------------------------------------------------------------
def _load(name: str) -> dict[str, Any]:
    return json.loads((MEASURED / name).read_text())


def _machine(r: dict[str, Any]) -> str:
    m = r["machine"]
    return f"{m['cpu']}, {m['cores']} cores, Python {m['python']}" + (f", Ray {m['ray']}" if m.get("ray") else "")


def render_scaling() -> str:
    r = _load("batch_scaling.json")
    c = r["clips"]
    lines = [f"`{r['command']}` on {_machine(r)}; model `{r['model']['file']}`, {r['detector']}; "
             f"{c['count']} clips of {c['frames_each']} frames ({c['size'][0]} x {c['size'][1]}, "
             f"{c['fps']:g} FPS; {c['made_from']}), annotated video written, no report; {r['runs']} rounds, "
             f"the configurations interleaved in each; wall time of the whole command (interpreter start-up "
             f"included). {r['note']} Load average before the last "
             f"call: {', '.join(f'{v:g}' for v in r['load_average_before'])}.",
             "", "| configuration | wall s (each round) | best s | frames | frames/s (best) | vs 1 worker |",
             "|---|---|---|---|---|---|"]
    base = next(row for row in r["rows"] if row["name"] == CONFIGS["local1"]["name"])["throughput_fps"]
    for row in r["rows"]:
        lines.append(f"| {row['name']} | {' / '.join(f'{w:.2f}' for w in row['wall_s'])} | {row['best_wall_s']:.2f} | "
                     f"{row['frames']} | {row['throughput_fps']:.1f} | {row['throughput_fps'] / base:.2f}x |")
    per_run = ", ".join(f"{v:.2f}x" for v in r["speedup_2_vs_1_per_run"])
    lines += ["", f"**2 local workers: {r['speedup_2_vs_1']:.2f}x the throughput of 1 worker** (best against best; "
              f"round by round: {per_run})."]
    if "machine_speedup_2_vs_1" in r:
        machine_runs = ", ".join(f"{v:.2f}x" for v in r["machine_speedup_2_vs_1_per_run"])
        lines += ["", f"The \"no driver\" rows run the same pipeline (1 thread each, video and JSONL written) in "
                  f"plain processes, each over its share of the clips: **2 such processes at once give "
                  f"{r['machine_speedup_2_vs_1']:.2f}x the throughput of 1** (round by round: {machine_runs}). That is "
                  f"what these 2 virtual cores give for this work, the ceiling of any driver; "
                  + (f"the batch's 2 workers reach {share:.0%} of it." if (share := r["speedup_2_vs_1"] / r[
                      "machine_speedup_2_vs_1"]) < 0.95 else "the batch's 2 workers reach it (within the noise): "
                     "the driver costs nothing measurable.")
                  + " Slow rounds are moments when other people's jobs were using the cores."]
    return "\n".join(lines) + "\n"


def render_ray() -> str:
    r = _load("batch_ray.json")
    rows = {row["name"]: row for row in r["rows"]}
    ray_row, two = rows[CONFIGS["ray"]["name"]], rows[CONFIGS["local2"]["name"]]
    c = r["clips"]
    lines = [f"`{r['command']}` on {_machine(r)}: the same {c['count']} clips of {c['frames_each']} frames, "
             f"{r['runs']} rounds, interleaved. {r['note']}", "",
             "| configuration | wall s (each round) | best s | frames/s (best) |", "|---|---|---|---|"]
    lines += [f"| {row['name']} | {' / '.join(f'{w:.2f}' for w in row['wall_s'])} | {row['best_wall_s']:.2f} | "
              f"{row['throughput_fps']:.1f} |" for row in r["rows"]]
    lines += ["", f"Starting Ray on this machine (`--ray local`: `ray.init` with 2 CPUs and the check task on the "
              f"node) took **{r['ray_start_s']:.1f} s**; after it, the batch took "
              f"{ray_row['best_wall_s'] - r['ray_start_s']:.2f} s against {two['best_wall_s']:.2f} s for the local "
              f"pool of 2 workers (best of each): **{r['ray_overhead_per_video_s']:+.2f} s per video** for Ray, "
              f"whose scheduler, object store and worker processes share the 2 cores with the work."]
    return "\n".join(lines) + "\n"


def render_cluster() -> str:
    r = _load("batch_cluster.json")
    c = r["clips"]
    return (f"`{r['command']}` on {_machine(r)}: `ray start --head --num-cpus 2` took {r['head_start_s']:.1f} s; "
            f"`python -m realtime.batch --ray auto` joined it in **{r['join_s']:.1f} s** (connect + a check task on "
            f"each node) and annotated {c['count']} clips of {c['frames_each']} frames in {r['best_wall_s']:.2f} s "
            f"({r['throughput_fps']:.1f} frames/s, whole command). {r['note']}\n")


EXAMPLE_CLUSTER = (4, 8)  # nodes x cores of the worked example below: an example, not a measurement


def render_estimate() -> str:
    r = _load("batch_scaling.json")
    ray = _load("batch_ray.json")
    two = next(row for row in r["rows"] if row["name"] == CONFIGS["local2"]["name"])
    per_core = two["throughput_fps"] / 2
    nodes, cores = EXAMPLE_CLUSTER
    clip_s = r["clips"]["frames_each"] / r["clips"]["fps"]
    return (f"*Estimate, not measured:* here one core annotates about {per_core:.0f} frames/s of "
            f"{r['clips']['size'][0]} x {r['clips']['size'][1]} video ({two['name']}, whole command), i.e. "
            f"{per_core / r['clips']['fps']:.1f}x real time for {r['clips']['fps']:g} FPS footage. With Ray's "
            f"measured cost per video ({ray['ray_overhead_per_video_s']:+.2f} s) small against an hour-long "
            f"video, {nodes} nodes x {cores} cores of this CPU would approach {nodes * cores} x {per_core:.0f} = "
            f"{nodes * cores * per_core:.0f} frames/s; for videos as short as these ({clip_s:.0f} s) the per-video "
            f"cost counts, and so does the driver, which writes every JSONL itself. Other CPUs, larger frames and "
            f"more faces per frame change the per-core figure: measure one node first (`--ray local`).\n")


def render_demo() -> str:
    r = _load("batch_demo_tracks.json")
    d = r["distinct_tracks"]
    dwell = ", ".join(f"track {t['track_id']} {t['label']} {t['dwell_s']:.1f} s / {t['frames_seen']} frames"
                      for t in r["tracks"])
    returned = r["extra_tracks"]
    return (f"`{r['command']}` (model `{r['model']['file']}`): {r['frames']} frames ({r['seconds']:.1f} s), "
            f"**{d['total']} tracks** (female {d['female']}, male {d['male']}, uncertain {d['uncertain']}: {dwell}) "
            f"for **{r['people_by_eye']} people** ({r['people_by_eye_how']}): a person left and came back "
            f"(or was lost and found again) **{returned} time{'s' if returned != 1 else ''}** on this clip. "
            f"The three walk towards the camera together and stay in view, so it is no test of re-entry: on "
            f"longer footage expect more tracks than people.\n")


# docs/batch.md's <!-- measured:NAME --> blocks; scripts/render_docs.py renders them with the others.
RENDERERS: dict[str, Callable[[], str]] = {"batch-scaling": render_scaling, "batch-ray": render_ray,
                                           "batch-cluster": render_cluster, "batch-estimate": render_estimate,
                                           "batch-demo": render_demo}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/batch_bench.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scaling", help="1 vs 2 local workers vs Ray local")
    s.add_argument("--clips", type=int, default=8)
    s.add_argument("--repeats", type=int, default=6, help="demo clip played this many times per clip")
    s.add_argument("--runs", type=int, default=2)
    s.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=["local1", "local2", "local2x2"],
                   help="what to run, interleaved, in each round (local2 is always needed)")
    s.add_argument("--note", default="", help="how quiet the machine was")
    s.add_argument("--model", type=Path, default=GENDER_MODEL)
    s.add_argument("--out", type=Path, default=MEASURED / "batch_scaling.json")
    s.add_argument("--append", action="store_true", help="add rounds to those already in --out")
    c = sub.add_parser("cluster", help="a one-node cluster (ray start --head), joined with --ray auto")
    c.add_argument("--clips", type=int, default=8)
    c.add_argument("--repeats", type=int, default=6)
    c.add_argument("--runs", type=int, default=1)
    c.add_argument("--port", type=int, default=6391)
    c.add_argument("--note", default="")
    c.add_argument("--model", type=Path, default=GENDER_MODEL)
    c.add_argument("--out", type=Path, default=MEASURED / "batch_cluster.json")
    d = sub.add_parser("demo", help="tracks on the demo clip")
    d.add_argument("--people-by-eye", type=int, required=True, help="people in the clip, counted by looking")
    d.add_argument("--model", type=Path, default=GENDER_MODEL)
    d.add_argument("--out", type=Path, default=MEASURED / "batch_demo_tracks.json")
    args = p.parse_args(argv)
    setup_logging()
    result = {"scaling": scaling, "cluster": cluster, "demo": demo}[args.cmd](args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    log.info("wrote %s (now: python scripts/render_docs.py): %s", args.out,
             json.dumps({k: v for k, v in result.items() if k not in ("rows", "tracks")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
