"""The optional extras a command needs, checked before the command runs.

The engine-only install (``pip install nere``) has no torch, psutil or matplotlib: a
command that needs them stops at once with the one line that fixes it, instead of a
traceback or a run that fails half-way.
"""
from __future__ import annotations

import importlib.util

import click

# extra of pyproject.toml -> the import names a command of that extra cannot run without
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "train": ("torch", "transformers", "torchcrf", "safetensors"),
    "export": ("torch", "transformers", "torchcrf", "safetensors", "onnx"),
    "bench": ("psutil", "matplotlib"),
}


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here (looked up, not imported)."""
    out = []
    for name in EXTRA_MODULES[extra]:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken or half-removed install
            found = False
        if not found:
            out.append(name)
    return out


def install_hint(*extras: str) -> str:
    return f"pip install 'nere[{','.join(extras)}]'"


def require(what: str, *extras: str) -> None:
    """Raise a one-line ClickException when a module of one of ``extras`` is missing."""
    missing = [m for extra in extras for m in missing_modules(extra)]
    if missing:
        names = ", ".join(dict.fromkeys(missing))
        raise click.ClickException(f"{what} needs {names}, not installed; install with: {install_hint(*extras)}")
