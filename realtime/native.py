"""Keep native libraries quiet and TensorFlow out of the runtime process.

MediaPipe's Python package imports TensorFlow opportunistically when it is installed (only for
docs/metadata helpers we never use). That costs ~2 s and ~300 MB, so the runtime blocks it while
MediaPipe is imported. Native LiteRT/MediaPipe code also prints INFO lines straight to fd 2; we
silence fd 2 around model loading unless debug logging is on.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import os
import sys
from collections.abc import Iterator

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class _BlockTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname == "tensorflow" or fullname.startswith("tensorflow."):
            raise ModuleNotFoundError(f"{fullname} is blocked in the realtime package", name=fullname)
        return None


@contextlib.contextmanager
def tensorflow_blocked() -> Iterator[None]:
    """Make ``import tensorflow`` fail inside the block (no-op if TensorFlow is already loaded)."""
    if "tensorflow" in sys.modules:
        yield
        return
    finder = _BlockTensorFlow()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence native writes to fd 2 (Python logging is flushed first and still works after)."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
