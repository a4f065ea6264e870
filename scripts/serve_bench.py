#!/usr/bin/env python3
"""What ``--serve`` costs the pipeline, and whether it stays flat over time.

    python scripts/serve_bench.py fps --json docs/measurements/serve_fps.json
    python scripts/serve_bench.py soak --minutes 10 --json docs/measurements/serve_soak.json

``fps``: the default 640 x 480 pipeline (``synthetic:faces=1,size=640x480``, as scripts/benchmark.py)
run as ``face-gender --no-display`` without ``--serve``, with ``--serve`` and no viewer, with 1 and
with 5 viewers reading the MJPEG stream as fast as they can; each configuration ``--repeats`` times
in turns, the median FPS (the run's own end line) and its peak RSS kept.

``soak``: one run on a looping source for ``--minutes`` while viewers (MJPEG and event streams) keep
connecting and leaving, between 0 and ``--max-viewers`` at a time; every 10 s the process's RSS,
threads and open file descriptors are sampled. A leak shows as a rising line.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realtime.cli import setup_logging
from realtime.files import open_output
from realtime.machine import cpu_info

log = logging.getLogger("serve_bench")
ROOT = Path(__file__).resolve().parent.parent
SOURCE = "synthetic:faces=1,frames={frames},size=640x480"
END_LINE = re.compile(r"(\d+) frames?, .* \(([\d.]+) FPS\)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_status(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
            elif key == "Threads":
                out[key] = int(value)
        out["fds"] = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    except OSError:
        pass
    return out


class Viewer(threading.Thread):
    """Reads a stream as fast as it comes, until stopped or the server closes."""

    def __init__(self, port: int, path: str) -> None:
        super().__init__(daemon=True)
        self.port, self.path = port, path
        self.stop = threading.Event()
        self.bytes = 0

    def run(self) -> None:
        deadline = time.monotonic() + 30
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                    sock.sendall(f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode())
                    while not self.stop.is_set():
                        chunk = sock.recv(1 << 16)
                        if not chunk:
                            return
                        self.bytes += len(chunk)
                return
            except OSError:
                time.sleep(0.05)  # the server is not up yet


def run_once(frames: int, viewers: int, serve: bool) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "realtime", "--source", SOURCE.format(frames=frames), "--no-display",
           "--no-progress", "--sync"]
    if serve:
        cmd += ["--serve", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    readers = [Viewer(port, "/stream.mjpg") for _ in range(viewers)]
    for r in readers:
        r.start()
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, proc_status(proc.pid).get("VmRSS", 0.0))
        time.sleep(0.05)
    stderr = proc.stderr.read() if proc.stderr else ""
    for r in readers:
        r.stop.set()
        r.join(timeout=5)
    match = END_LINE.search(stderr)
    if proc.returncode != 0 or match is None:
        raise SystemExit(f"error: the run failed (exit {proc.returncode}): {stderr[-500:]}")
    return {"fps": float(match.group(2)), "frames": int(match.group(1)), "rss_mb_peak": round(peak, 1),
            "viewer_mb": round(sum(r.bytes for r in readers) / 2**20, 1)}


def cmd_fps(args: argparse.Namespace) -> dict:
    configs = [("no --serve", 0, False), ("--serve, 0 viewers", 0, True), ("--serve, 1 viewer", 1, True),
               ("--serve, 5 viewers", 5, True)]
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in configs}
    for k in range(args.repeats):
        for name, viewers, serve in configs:
            result = run_once(args.frames, viewers, serve)
            runs[name].append(result)
            log.info("round %d, %s: %.1f FPS, peak RSS %.0f MB", k + 1, name, result["fps"], result["rss_mb_peak"])
    rows = {name: {"fps_median": round(statistics.median(r["fps"] for r in rs), 1),
                   "fps_runs": [r["fps"] for r in rs],
                   "rss_mb_peak_median": round(statistics.median(r["rss_mb_peak"] for r in rs), 1),
                   "viewer_mb_median": statistics.median(r["viewer_mb"] for r in rs)} for name, rs in runs.items()}
    base = rows["no --serve"]["fps_median"]
    for row in rows.values():
        row["fps_vs_no_serve"] = round(row["fps_median"] / base, 3)
    return {"command": f"python scripts/serve_bench.py fps --frames {args.frames} --repeats {args.repeats}",
            "source": SOURCE.format(frames=args.frames), "mode": "sync", "rows": rows}


def cmd_soak(args: argparse.Namespace) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "realtime", "--source", SOURCE.format(frames=10**9), "--no-display", "--no-progress",
           "--serve", f"127.0.0.1:{port}", "--serve-max-viewers", str(args.max_viewers)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rng = random.Random(1)
    viewers: list[Viewer] = []
    samples = []
    started = time.monotonic()
    next_sample = started
    connects = 0
    try:
        while time.monotonic() - started < args.minutes * 60:
            if proc.poll() is not None:
                raise SystemExit(f"error: the run ended early: {proc.stderr.read()[-500:] if proc.stderr else ''}")
            viewers = [v for v in viewers if v.is_alive()]
            if viewers and rng.random() < 0.5:
                leaving = viewers.pop(rng.randrange(len(viewers)))
                leaving.stop.set()
            if len(viewers) < args.max_viewers and rng.random() < 0.6:
                v = Viewer(port, rng.choice(["/stream.mjpg", "/events"]))
                v.start()
                viewers.append(v)
                connects += 1
            if time.monotonic() >= next_sample:
                s = proc_status(proc.pid)
                samples.append({"t_s": round(time.monotonic() - started), "rss_mb": round(s.get("VmRSS", 0), 1),
                                "threads": s.get("Threads"), "fds": s.get("fds"), "viewers": len(viewers)})
                log.info("soak %s", samples[-1])
                next_sample += 10
            time.sleep(rng.uniform(0.5, 2.0))
    finally:
        for v in viewers:
            v.stop.set()
        time.sleep(2)
        final = proc_status(proc.pid)
        proc.terminate()
        proc.wait(timeout=60)
    first = [s for s in samples if s["t_s"] >= 60][:6]  # after a minute of warm-up
    last = samples[-6:]
    return {"command": f"python scripts/serve_bench.py soak --minutes {args.minutes} --max-viewers {args.max_viewers}",
            "source": SOURCE.format(frames="1e9"), "minutes": args.minutes, "viewer_connections": connects,
            "samples": samples,
            "after_viewers_left": {"threads": final.get("Threads"), "fds": final.get("fds"),
                                   "rss_mb": round(final.get("VmRSS", 0), 1)},
            "rss_mb_minute_1": statistics.median(s["rss_mb"] for s in first) if first else None,
            "rss_mb_last_minute": statistics.median(s["rss_mb"] for s in last) if last else None,
            "exit_status_on_sigterm": proc.returncode}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fps")
    p.add_argument("--frames", type=int, default=1500)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", required=True)
    p = sub.add_parser("soak")
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--max-viewers", type=int, default=5)
    p.add_argument("--json", required=True)
    args = parser.parse_args(argv)
    setup_logging(False)
    result = cmd_fps(args) if args.command == "fps" else cmd_soak(args)
    result["cpu"] = cpu_info()
    with open_output(Path(args.json), "w") as fh:
        json.dump(result, fh, indent=2)
    log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
