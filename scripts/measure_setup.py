#!/usr/bin/env python3
"""What a newcomer waits for and what lands on disk: `make test`'s wall time and the size of .venv.

    python3 scripts/measure_setup.py --json docs/measurements/setup.json

Runs `make test` in this checkout (installs what is missing, then the whole suite), times it, and
reads pytest's summary line and the size of `.venv` afterwards. Run it on a warm checkout for the
suite's own time (the first run also installs the requirements).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from realtime.machine import cpu_info  # noqa: E402  (after the repo is on the path)

SUMMARY = re.compile(r"(\d+ (?:passed|failed).*?) in ([\d.]+)s")


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    started = time.monotonic()
    proc = subprocess.run(["make", "test"], cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - started
    tail = proc.stdout.strip().splitlines()[-1:] or [""]
    match = SUMMARY.search(proc.stdout)
    result = {"command": "make test", "exit_status": proc.returncode, "wall_s": round(wall, 1),
              "pytest_summary": match.group(1) if match else tail[0],
              "pytest_s": float(match.group(2)) if match else None,
              "venv_mb": round(folder_mb(ROOT / ".venv"), 1), "cpu": cpu_info()}
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "cpu"}))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
