#!/usr/bin/env python3
"""Load the local web app and measure it: latency, lost jobs and the server's peak memory.

Starts ``python -m realtime.web`` on 127.0.0.1 (a free port; no traffic leaves this machine), sends a
bounded number of requests in two scenarios, each against a freshly started server, and writes
docs/measurements/web_load.json (then ``python scripts/render_docs.py`` puts the figures into
docs/web.md):

* ``pixel_limit``: N image uploads at once, every image at the pixel limit (50 megapixels, JPEG):
  the server must hold one decoded image at a time, so its peak RSS stays bounded.
* ``mixed``: N image uploads (12-megapixel photos) and M video uploads (the bundled demo clip) at
  once; every video is then polled until its job ends.

For each: HTTP statuses, p50/p95/max latency (an image: request to response; a video: upload to
job done), how many requests or jobs were lost (any that did not end in a result), and the server's
RSS when idle and at its peak (VmHWM from /proc, sampled RSS as a check).

  python scripts/web_load.py                        # 20 images, 20 images + 5 videos
  python scripts/web_load.py --images 4 --videos 1 --out /tmp/web_load.json   # a quick look
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from benchmark import cpu_info, versions  # noqa: E402

from realtime.cli import setup_logging  # noqa: E402
from realtime.paths import GENDER_MODEL  # noqa: E402

log = logging.getLogger("web_load")

DEMO_CLIP = REPO_ROOT / "assets" / "face-demographics-walking-and-pause.mp4"
OUT = REPO_ROOT / "docs" / "measurements" / "web_load.json"
LIMIT_SIZE = (8660, 5773)  # 49.99 megapixels: just under the app's 50-megapixel limit
PHOTO_SIZE = (4000, 3000)  # a phone photo
HOST = "127.0.0.1"  # loopback only


# --- test data ------------------------------------------------------------------------------------
def face_photo() -> np.ndarray:
    from realtime.paths import SAMPLE_FACE

    image = cv2.imread(str(SAMPLE_FACE), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"error: the sample photo {SAMPLE_FACE} is missing")
    return image


def scene(size: tuple[int, int], faces: int, seed: int) -> bytes:
    """A JPEG of ``size`` (width, height): a textured background with ``faces`` copies of the photo."""
    w, h = size
    rng = np.random.default_rng(seed)
    small = rng.integers(60, 200, (h // 64 + 1, w // 64 + 1, 3), np.uint8)
    canvas = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    canvas += rng.integers(0, 12, (1, w, 3), np.uint8)  # some texture, so the JPEG is not trivially small
    photo = face_photo()
    side = min(w, h) // 3
    face = cv2.resize(photo, (side * 512 // 600, side))
    for i in range(faces):
        x = int((i + 0.5) * w / faces - face.shape[1] / 2)
        y = (h - side) // 2
        canvas[y : y + side, x : x + face.shape[1]] = face
    ok, buf = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


# --- the server -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class Server:
    """``python -m realtime.web`` on a free loopback port, with its RSS sampled every 50 ms."""

    def __init__(self, model: Path, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.log = (workdir / f"server-{self.port}.log").open("wb")
        env = {**os.environ, "TMPDIR": str(workdir)}
        self.proc = subprocess.Popen([sys.executable, "-m", "realtime.web", "--host", HOST, "--port", str(self.port),
                                      "--model", str(model)],
                                     cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        self.samples: list[int] = []
        self._stop = threading.Event()
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"error: the web app did not start (see {self.log.name})")
            try:
                get_json(f"{self.base}/api/info")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("error: the web app did not answer within 120 s") from None
                time.sleep(0.2)
        time.sleep(1.0)  # settled
        self.idle_rss_kb = status_kb(self.proc.pid, "VmRSS") or 0
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = status_kb(self.proc.pid, "VmRSS")
            if rss is not None:
                self.samples.append(rss)
            self._stop.wait(0.05)

    def peak_kb(self) -> int:
        return status_kb(self.proc.pid, "VmHWM") or 0

    def stop(self) -> int:
        self._stop.set()
        self._sampler.join()
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self.log.close()


# --- requests -------------------------------------------------------------------------------------
def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def post_file(url: str, name: str, data: bytes, mime: str) -> tuple[int, dict[str, Any]]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: {mime}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=900) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def upload_image(base: str, name: str, data: bytes) -> dict[str, Any]:
    t0 = time.perf_counter()
    status, body = post_file(f"{base}/api/upload", name, data, "image/jpeg")
    seconds = time.perf_counter() - t0
    items = body.get("items") or [{}]
    ok = status == 200 and "faces" in items[0]
    return {"kind": "image", "status": status, "ok": ok, "seconds": seconds,
            "faces": len(items[0].get("faces", [])) if ok else None, "error": body.get("error")}


def upload_video(base: str, name: str, data: bytes, frames: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    status, body = post_file(f"{base}/api/upload", name, data, "video/mp4")
    upload_s = time.perf_counter() - t0
    if status != 200:
        return {"kind": "video", "status": status, "ok": False, "seconds": upload_s, "error": body.get("error")}
    job_id = body["items"][0]["id"]
    deadline = time.monotonic() + 1800
    while True:
        job = get_json(f"{base}/api/jobs/{job_id}")
        if job["state"] not in ("queued", "running") or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    seconds = time.perf_counter() - t0
    ok = job["state"] == "done" and job["frames"] == frames
    return {"kind": "video", "status": status, "ok": ok, "seconds": seconds, "upload_seconds": upload_s,
            "state": job["state"], "frames": job["frames"], "tracks": len(job.get("tracks", [])),
            "error": job.get("error")}


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    if not results:
        return {"n": 0}
    secs = sorted(r["seconds"] for r in results)
    p95 = secs[min(len(secs) - 1, max(0, round(0.95 * len(secs) + 0.5) - 1))]  # nearest rank
    return {"n": len(results), "ok": sum(r["ok"] for r in results), "lost": sum(not r["ok"] for r in results),
            "statuses": sorted({r["status"] for r in results}), "p50_s": round(statistics.median(secs), 2),
            "p95_s": round(p95, 2), "max_s": round(secs[-1], 2)}


def scenario(name: str, model: Path, workdir: Path, images: list[tuple[str, bytes]],
             videos: list[tuple[str, bytes, int]]) -> dict[str, Any]:
    log.info("%s: %d images and %d videos at once ...", name, len(images), len(videos))
    server = Server(model, workdir)
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=len(images) + len(videos)) as pool:
            futures = [pool.submit(upload_image, server.base, n, d) for n, d in images]
            futures += [pool.submit(upload_video, server.base, n, d, f) for n, d, f in videos]
            results = [f.result() for f in futures]
        wall = time.perf_counter() - started
        peak_kb = server.peak_kb()
    finally:
        rc = server.stop()
    img = [r for r in results if r["kind"] == "image"]
    vid = [r for r in results if r["kind"] == "video"]
    out = {"wall_s": round(wall, 1), "images": summary(img), "videos": summary(vid),
           "idle_rss_mb": round(server.idle_rss_kb / 1024), "peak_rss_mb": round(peak_kb / 1024),
           "peak_rss_sampled_mb": round(max(server.samples, default=0) / 1024), "server_exit": rc,
           "errors": sorted({r["error"] for r in results if r.get("error")})}
    log.info("%s: %s", name, json.dumps(out))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=20, help="image uploads at once (default 20)")
    p.add_argument("--videos", type=int, default=5, help="video uploads at once in the mixed scenario (default 5)")
    p.add_argument("--model", type=Path, default=GENDER_MODEL, help="gender model (default: the shipped one)")
    p.add_argument("--out", type=Path, default=OUT, help=f"report JSON (default {OUT.relative_to(REPO_ROOT)})")
    p.add_argument("--note", default="", help="what was measured, stored in the report (e.g. which version)")
    args = p.parse_args(argv)
    setup_logging()
    if args.images < 1 or args.videos < 0:
        p.error("--images must be at least 1 and --videos at least 0")
    with tempfile.TemporaryDirectory(prefix="web-load-") as tmp:
        workdir = Path(tmp)
        at_limit = scene(LIMIT_SIZE, faces=3, seed=1)
        photos = [scene(PHOTO_SIZE, faces=1 + i % 3, seed=10 + i) for i in range(args.images)]
        clip = DEMO_CLIP.read_bytes()
        cap = cv2.VideoCapture(str(DEMO_CLIP))
        clip_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        load_before = os.getloadavg()
        limit = scenario("pixel_limit", args.model, workdir,
                         [(f"limit{i}.jpg", at_limit) for i in range(args.images)], [])
        mixed = scenario("mixed", args.model, workdir, [(f"photo{i}.jpg", d) for i, d in enumerate(photos)],
                         [(f"clip{i}.mp4", clip, clip_frames) for i in range(args.videos)])
        load_after = os.getloadavg()
    report = {
        "command": " ".join(["python scripts/web_load.py", *(sys.argv[1:] if argv is None else argv)]),
        "note": args.note, "cpu": cpu_info(), "versions": versions(), "model": args.model.name,
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
        "pixel_limit": {"image": {"width": LIMIT_SIZE[0], "height": LIMIT_SIZE[1],
                                  "megapixels": round(LIMIT_SIZE[0] * LIMIT_SIZE[1] / 1e6, 2),
                                  "bytes": len(at_limit)}, **limit},
        "mixed": {"image": {"width": PHOTO_SIZE[0], "height": PHOTO_SIZE[1],
                            "mean_bytes": round(sum(map(len, photos)) / len(photos))},
                  "video": {"file": DEMO_CLIP.name, "frames": clip_frames, "bytes": len(clip)}, **mixed},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(f".{args.out.name}.partial")
    tmp_out.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp_out, args.out)
    log.info("wrote %s", args.out)
    lost = limit["images"]["lost"] + mixed["images"]["lost"] + mixed["videos"].get("lost", 0)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
