#!/usr/bin/env python3
"""What a newcomer waits for and what lands on disk.

    python3 scripts/measure_setup.py --json docs/measurements/setup.json
    python3 scripts/measure_setup.py installs --json docs/measurements/installs.json [--before-ref main]

Default mode (``make-test``): runs `make test` in this checkout (installs what is missing, then the
whole suite), times it, and reads pytest's summary line and the size of `.venv` afterwards. Run it on
a warm checkout for the suite's own time (the first run also installs the requirements).

``installs``: for each install target (the runtime, each extra that matters on its own, and `make
test`'s set), once with the requirement files of ``--before-ref`` (read with `git show`) and once
with this checkout's: a fresh venv under a temporary folder, pip upgraded (not timed), then the
timed `pip install --no-cache-dir -r FILE...` (every wheel downloaded again; the pip config of this
machine applies), then the venv's size, its OpenCV wheels and `pip check`. It also downloads the
candidate OpenCV wheels for this machine and for Linux aarch64 (the Pi) and records their unpacked
sizes. The venvs are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from realtime.machine import cpu_info  # noqa: E402  (after the repo is on the path)

log = logging.getLogger("measure_setup")
SUMMARY = re.compile(r"(\d+ (?:passed|failed).*?) in ([\d.]+)s")
OPENCV_WHEELS = ("opencv-python", "opencv-contrib-python", "opencv-python-headless", "opencv-contrib-python-headless")
# Install targets: name -> requirement files (each includes requirements.txt with -r); "all" is what
# `make test` installs. A file missing at the "before" ref (the extra did not exist) skips that side.
TARGETS = {
    "runtime": ["requirements.txt"],
    "mediapipe": ["requirements-mediapipe.txt"],
    "web": ["requirements-web.txt"],
    "train": ["requirements-train.txt"],
    "batch": ["requirements-batch.txt"],
    "all": ["requirements-dev.txt", "requirements-mediapipe.txt", "requirements-train.txt",
                  "requirements-web.txt", "requirements-batch.txt", "requirements-teach.txt"],
}
# The OpenCV wheels compared for the runtime (the non-headless ones have the live window).
OPENCV_CANDIDATES = ("opencv-contrib-python==5.1.0.95", "opencv-contrib-python==5.0.0.93", "opencv-python==5.0.0.93",
                     "opencv-python-headless==5.0.0.93")
AARCH64 = ["--platform", "manylinux_2_28_aarch64", "--platform", "manylinux2014_aarch64", "--python-version", "3.11",
           "--implementation", "cp", "--abi", "cp311", "--only-binary=:all:"]


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)


def measure_make_test(json_path: Path) -> int:
    load_before = [round(v, 2) for v in os.getloadavg()]  # other work on the machine slows the suite
    started = time.monotonic()
    proc = run(["make", "test"], cwd=ROOT)
    wall = time.monotonic() - started
    tail = proc.stdout.strip().splitlines()[-1:] or [""]
    match = SUMMARY.search(proc.stdout)
    result = {"command": "make test", "exit_status": proc.returncode, "wall_s": round(wall, 1),
              "pytest_summary": match.group(1) if match else tail[0],
              "pytest_s": float(match.group(2)) if match else None,
              "venv_mb": round(folder_mb(ROOT / ".venv"), 1), "cpu": cpu_info(), "load_average_before": load_before}
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    log.info("%s", json.dumps({k: v for k, v in result.items() if k != "cpu"}))
    return proc.returncode


def requirement_files(ref: str | None, dest: Path) -> Path:
    """The requirements*.txt of git ``ref`` (None: this checkout) copied into ``dest``."""
    dest.mkdir(parents=True)
    if ref is None:
        for path in ROOT.glob("requirements*.txt"):
            shutil.copy2(path, dest / path.name)
        return dest
    listing = run(["git", "ls-tree", "--name-only", ref], cwd=ROOT)
    if listing.returncode != 0:
        raise SystemExit(f"error: git ls-tree {ref} failed: {listing.stderr.strip()}")
    for name in listing.stdout.split():
        if re.fullmatch(r"requirements[\w-]*\.txt", name):
            (dest / name).write_text(run(["git", "show", f"{ref}:{name}"], cwd=ROOT).stdout)
    return dest


def install(files: list[Path], work: Path) -> dict[str, Any]:
    """A fresh venv in ``work`` with ``files`` installed; its time, size and OpenCV wheels."""
    venv = work / "venv"
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    up = run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--upgrade", "pip"])
    if up.returncode != 0:
        raise SystemExit(f"error: could not upgrade pip in {venv}: {up.stderr.strip()[-500:]}")
    args = [a for f in files for a in ("-r", str(f))]
    started = time.monotonic()
    proc = run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-cache-dir", *args],
               cwd=files[0].parent)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"error: pip install {' '.join(args)} failed: {proc.stderr.strip()[-1500:]}")
    listed = json.loads(run([str(python), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"])
                        .stdout)
    versions = {p["name"].lower(): p["version"] for p in listed}
    check = run([str(python), "-m", "pip", "check", "--disable-pip-version-check"])
    site = next((venv / "lib").glob("python3*/site-packages"))
    return {"install_s": round(seconds, 1), "venv_mb": round(folder_mb(venv), 1),
            "site_packages_mb": round(folder_mb(site), 1), "packages": len(versions),
            "opencv_wheels": {n: versions[n] for n in OPENCV_WHEELS if n in versions},
            "pip_check_ok": check.returncode == 0, "pip": versions.get("pip")}


def wheel_sizes(work: Path) -> list[dict[str, Any]]:
    """The candidate OpenCV wheels for this machine and for Linux aarch64: download and unpacked MB."""
    rows = []
    for spec in OPENCV_CANDIDATES:
        row: dict[str, Any] = {"wheel": spec}
        for platform_name, extra in (("host", []), ("aarch64", AARCH64)):
            dest = work / re.sub(r"\W", "_", spec) / platform_name
            proc = run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                        "--no-cache-dir", "-d", str(dest), *extra, spec])
            wheels = sorted(dest.glob("*.whl"))
            if proc.returncode != 0 or not wheels:
                row[platform_name] = None
                continue
            unpacked = sum(i.file_size for i in zipfile.ZipFile(wheels[0]).infolist())
            row[platform_name] = {"file": wheels[0].name, "wheel_mb": round(wheels[0].stat().st_size / 2**20, 1),
                                  "unpacked_mb": round(unpacked / 2**20, 1)}
        rows.append(row)
    return rows


def pip_config_keys() -> list[str]:
    """Which pip settings this machine's config files and PIP_* variables set (their values stay out)."""
    proc = run([sys.executable, "-m", "pip", "config", "list"])
    keys = sorted({line.split("=", 1)[0] for line in proc.stdout.splitlines() if "=" in line})
    return keys + sorted(k for k in os.environ if k.startswith("PIP_"))


def measure_installs(json_path: Path, before_ref: str, only: list[str] | None) -> int:
    result: dict[str, Any] = {
        "command": f"python3 scripts/measure_setup.py installs --before-ref {before_ref}",
        "python": sys.version.split()[0], "before_ref": before_ref,
        "before_commit": run(["git", "rev-parse", "--short", before_ref], cwd=ROOT).stdout.strip(),
        "after_commit": run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT).stdout.strip(),
        "pip_command": "pip install --no-cache-dir -r FILE... (fresh venv, pip upgraded first, not timed)",
        "pip_config_keys": pip_config_keys(), "load_average_before": list(os.getloadavg()),
        "targets": {}, "cpu": cpu_info()}
    with tempfile.TemporaryDirectory(prefix="measure-installs-") as tmp:
        work = Path(tmp)
        reqs = {"before": requirement_files(before_ref, work / "before"),
                "after": requirement_files(None, work / "after")}
        for name, files in TARGETS.items():
            if only and name not in only:
                continue
            entry: dict[str, Any] = {"files": files}
            for side, folder in reqs.items():
                paths = [folder / f for f in files]
                if name == "all" and side == "before":
                    paths = [p for p in paths if p.is_file()]  # no requirements-mediapipe.txt before
                if not paths or not all(p.is_file() for p in paths):
                    entry[side] = None
                    continue
                log.info("%s, %s: pip install %s", name, side, " ".join(p.name for p in paths))
                venv_dir = work / (side + "-" + re.sub(r"\W", "_", name))
                entry[side] = install(paths, venv_dir)
                shutil.rmtree(venv_dir)
                log.info("  %s", json.dumps(entry[side]))
            result["targets"][name] = entry
        log.info("OpenCV wheels")
        result["opencv_candidates"] = wheel_sizes(work / "wheels")
    result["load_average_after"] = list(os.getloadavg())
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    two = [f"{n} ({side})" for n, e in result["targets"].items() for side in ("before", "after")
           if e.get(side) and len(e[side]["opencv_wheels"]) != 1]
    if two:
        log.error("error: not exactly one OpenCV wheel in: %s", ", ".join(two))
        return 1
    return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", choices=("make-test", "installs"), default="make-test")
    parser.add_argument("--json", required=True, type=Path)
    parser.add_argument("--before-ref", default="main", help="git ref of the 'before' requirement files (installs)")
    parser.add_argument("--only", nargs="+", choices=list(TARGETS), help="measure only these targets (installs)")
    args = parser.parse_args()
    if args.mode == "installs":
        return measure_installs(args.json, args.before_ref, args.only)
    return measure_make_test(args.json)


if __name__ == "__main__":
    sys.exit(main())
