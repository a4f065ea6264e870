"""Load a TFLite model with LiteRT, falling back to tflite_runtime, then tensorflow.lite."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from .errors import ModelError
from .native import quiet_stderr

log = logging.getLogger(__name__)

_BACKENDS = (
    ("ai_edge_litert.interpreter", "Interpreter"),
    ("tflite_runtime.interpreter", "Interpreter"),
    ("tensorflow.lite", "Interpreter"),
)


def interpreter_class() -> tuple[type, str]:
    """The first available interpreter class and the module it came from."""
    errors = []
    for module_name, attr in _BACKENDS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            errors.append(f"{module_name}: {exc}")
            continue
        return getattr(module, attr), module_name
    raise ModelError("no TFLite interpreter available; install ai-edge-litert (" + "; ".join(errors) + ")")


def load_interpreter(path: str | Path, num_threads: int | None = None) -> Any:
    """Load and allocate a TFLite model; any failure becomes one clear :class:`ModelError`."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    if path.stat().st_size == 0:
        raise ModelError(f"model file is empty: {path}")
    cls, backend = interpreter_class()
    try:
        with quiet_stderr():
            interpreter = cls(model_path=str(path), num_threads=num_threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelError(f"cannot load model {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
    log.debug("loaded %s with %s", path, backend)
    return interpreter
