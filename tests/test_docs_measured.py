"""Every generated figure in the README and docs matches the measured JSON it comes from."""

from __future__ import annotations

import subprocess
import sys

from fixtures import REPO_ROOT


def test_generated_blocks_match_their_json() -> None:
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "render_docs.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_every_block_has_a_renderer_and_its_json() -> None:
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import render_docs

    names = set()
    for path in render_docs.DOCS:
        names |= {m.group("name") for m in render_docs.BLOCK.finditer(path.read_text())}
    assert names, "no generated blocks found"
    assert names <= set(render_docs.RENDERERS), names - set(render_docs.RENDERERS)
    for name in names:
        assert render_docs.RENDERERS[name]().strip()
