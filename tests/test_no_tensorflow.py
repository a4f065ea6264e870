"""The runtime never imports TensorFlow, and runs where TensorFlow cannot be imported at all; nor
does it need MediaPipe or matplotlib (extras, not in requirements.txt) to run the pipeline."""

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
print(*(name in sys.modules for name in ("tensorflow", "keras", "mediapipe", "matplotlib")))
"""
BLOCK = """
import importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
"""
LEAN = ("tensorflow", "keras", "mediapipe", "matplotlib")  # none of them is in requirements.txt


def _run(model: Path, block: bool | tuple[str, ...]) -> str:
    blocked = LEAN[:2] if block is True else block or ()
    code = SCRIPT.format(block=BLOCK.format(blocked=tuple(blocked)) if blocked else "")
    proc = subprocess.run([sys.executable, "-c", code, str(model)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_pipeline_does_not_load_tensorflow(colour_model: Path) -> None:
    # Even with TensorFlow installed (training's requirements), a full run leaves it unloaded.
    assert _run(colour_model, block=False) == "False False False False"


def test_pipeline_runs_without_tensorflow(colour_model: Path) -> None:
    assert _run(colour_model, block=True) == "False False False False"


def test_pipeline_runs_on_the_lean_runtime(colour_model: Path) -> None:
    """requirements.txt alone: no MediaPipe, no matplotlib (the synthetic source's face ships inside)."""
    assert _run(colour_model, block=LEAN) == "False False False False"


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


def test_extras_are_imported_only_where_they_are_optional() -> None:
    """MediaPipe only in the detector's mediapipe backend, matplotlib only in the batch report's plots;
    both inside functions, so importing any runtime module needs neither."""
    allowed = {"mediapipe": {"realtime/face_detector.py"}, "matplotlib": {"realtime/batch/report.py"}}
    offenders = []
    for path in (REPO_ROOT / "realtime").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                where = path.relative_to(REPO_ROOT).as_posix()
                if root in allowed and (where not in allowed[root] or id(node) in top_level):
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {name}")
    assert offenders == []
