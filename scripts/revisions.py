"""An earlier revision's module, imported beside the current package (for the comparison scripts)."""
from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def old_module(rev: str, path: str) -> types.ModuleType:
    """``path`` (e.g. ``engine/core/viterbi.py``) as it was at ``rev`` (``git show``), as a
    module of its own named after both; its imports resolve to the current package."""
    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    name = f"{Path(path).stem}_{rev}"
    module = types.ModuleType(name)
    module.__file__ = f"{rev}:{path}"
    sys.modules[name] = module  # dataclasses and typing look their module up by name
    exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)
    return module
