"""The runtime never imports TensorFlow, and runs where TensorFlow cannot be imported at all."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from realtime_helpers import REPO_ROOT

SCRIPT = """
import sys
{block}
import numpy as np
from realtime.crop import crop_face
from realtime.face_detector import FaceDetector
from realtime.pipeline import Config, run
stats = run(Config(source="synthetic:frames=3,size=320x240", model=sys.argv[1], display=False, progress=False))
assert stats.frames == 3 and stats.faces >= 2, stats
print("tensorflow" in sys.modules, "keras" in sys.modules)
"""
BLOCK = """
import importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("tensorflow", "keras"):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
"""


def _run(model: Path, block: bool) -> str:
    code = SCRIPT.format(block=BLOCK if block else "")
    proc = subprocess.run([sys.executable, "-c", code, str(model)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_pipeline_does_not_load_tensorflow(colour_model: Path) -> None:
    # Even with TensorFlow installed (training's requirements), a full run leaves it unloaded.
    assert _run(colour_model, block=False) == "False False"


def test_pipeline_runs_without_tensorflow(colour_model: Path) -> None:
    assert _run(colour_model, block=True) == "False False"


def test_no_tensorflow_imports_in_the_source() -> None:
    offenders = []
    for path in (REPO_ROOT / "realtime").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("tensorflow", "keras", "training")]
    # realtime/litert.py names "tensorflow.lite" as a string (the last fallback), never as an import.
    assert offenders == []
