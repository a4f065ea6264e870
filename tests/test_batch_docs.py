"""docs/batch.md's figures are rendered from docs/measurements/batch_*.json (measured by
scripts/batch_bench.py), which name the machine and the model they were measured with; the blocks
are rendered by scripts/render_docs.py, the one renderer of every measured block."""

from __future__ import annotations

import json
import sys
from typing import Any

from fixtures import REPO_ROOT

MEASURED = REPO_ROOT / "docs" / "measurements"
DOC = REPO_ROOT / "docs" / "batch.md"


def render_docs() -> Any:  # (a script: imported from scripts/)
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import render_docs

    return render_docs


def test_batch_doc_blocks_match_their_json() -> None:
    text = DOC.read_text()
    assert render_docs().render(text, DOC) == text, "stale blocks in docs/batch.md: python scripts/render_docs.py"


def test_every_block_is_filled() -> None:
    rd = render_docs()
    import batch_bench

    text = DOC.read_text()
    names = {m.group("name") for m in rd.BLOCK.finditer(text)}
    assert names == set(batch_bench.RENDERERS)  # every batch renderer has its block here, and no other
    assert set(batch_bench.RENDERERS) <= set(rd.RENDERERS)  # registered with the one renderer
    for m in rd.BLOCK.finditer(text):
        assert m.group("body").strip(), f"block {m.group('name')} is empty"


def test_measurements_name_machine_and_model() -> None:
    files = sorted(MEASURED.glob("batch_*.json"))
    assert {f.name for f in files} >= {"batch_scaling.json", "batch_ray.json", "batch_cluster.json",
                                         "batch_demo_tracks.json"}
    for path in files:
        data = json.loads(path.read_text())
        assert data["machine"]["cpu"] and data["machine"]["cores"] >= 1, path
        assert data["model"]["file"].endswith(".tflite") and len(data["model"]["sha256"]) == 16, path
