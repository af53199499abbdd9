"""The first ```python block of README.md runs as written.

It runs in a scratch folder laid out like the repository root (``artifacts`` is a link to
the repository's), so relative paths in the example work and its outputs land in the
scratch folder, never in the repository.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def first_python_block(markdown: str) -> str:
    """The code of the first fenced block tagged ``python``."""
    found = re.search(r"^```python[^\n]*\n(.*?)^```", markdown, re.S | re.M)
    assert found, "README.md has no ```python block"
    return found.group(1)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_first_python_block_is_found():
    md = "intro\n```bash\necho no\n```\n```python\nx = 1\n```\n```python\ny = 2\n```\n"
    assert first_python_block(md) == "x = 1\n"


def test_readme_first_python_example_runs(tmp_path):
    code = first_python_block(README.read_text(encoding="utf-8"))
    (tmp_path / "artifacts").symlink_to(ROOT / "artifacts", target_is_directory=True)
    script = tmp_path / "readme_example.py"
    script.write_text(code, encoding="utf-8")
    before = snapshot(ROOT / "artifacts")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"README example failed:\n{code}\n{proc.stderr[-3000:]}"
    assert snapshot(ROOT / "artifacts") == before  # wrote nothing into the repository's artifacts
