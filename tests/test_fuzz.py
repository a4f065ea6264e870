"""A small seeded fuzz test: mutated copies of a clip, an image and a model through the CLI.

Every run must end with exit 0 or 2 (one clear error), never a traceback or a crash, and a run
that fails must leave no file at a final output name (unless its error line says what it kept).
Bounded: 30 runs one after another, each with one interpreter thread (a busy 2-core machine has no
threads to spare for parallel runs), about a minute. ``scripts/fuzz_cli.py`` runs the same checks
on more inputs for docs/reliability.md.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from realtime_helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from fuzz_cli import SEED, check, cli_jobs, inputs

RUNS_PER_KIND = 10


@pytest.mark.slow
def test_mutated_inputs_end_cleanly(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    clip, jpeg, model = inputs(tmp_path)
    for kind, work, cmd, outs, allowed in cli_jobs(tmp_path, RUNS_PER_KIND, rng, clip, jpeg, model):
        result = check(cmd, work, outs, allowed)
        assert result["outcome"] == "ok", (kind, result)
