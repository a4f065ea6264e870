"""docs/batch.md's figures are rendered from docs/measurements/batch_*.json, which name the machine
and the model they were measured with."""

from __future__ import annotations

import json
import subprocess
import sys

from fixtures import REPO_ROOT

MEASURED = REPO_ROOT / "docs" / "measurements"


def test_batch_doc_blocks_match_their_json() -> None:
    proc = subprocess.run([sys.executable, "-m", "realtime.batch_bench", "render", "--check"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_every_block_is_filled() -> None:
    sys.path.insert(0, str(REPO_ROOT))
    from realtime import batch_bench

    text = batch_bench.DOC.read_text()
    names = {m.group("name") for m in batch_bench.BLOCK.finditer(text)}
    assert names == set(batch_bench.RENDERERS)
    for m in batch_bench.BLOCK.finditer(text):
        assert m.group("body").strip(), f"block {m.group('name')} is empty"


def test_measurements_name_machine_and_model() -> None:
    files = sorted(MEASURED.glob("batch_*.json"))
    assert {f.name for f in files} >= {"batch_scaling.json", "batch_ray.json", "batch_cluster.json",
                                         "batch_demo_tracks.json"}
    for path in files:
        data = json.loads(path.read_text())
        assert data["machine"]["cpu"] and data["machine"]["cores"] >= 1, path
        assert data["model"]["file"].endswith(".tflite") and len(data["model"]["sha256"]) == 16, path
