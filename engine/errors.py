"""The engine's user-facing errors: one line that names the bad thing and why.

They subclass ValueError so library callers can catch bad input generically; the CLI
turns them into a one-line message and a non-zero exit, never a traceback.
"""
from __future__ import annotations


class EngineError(ValueError):
    """A user mistake or bad input the engine refuses (file, column, device, out dir)."""


class BundleError(EngineError):
    """A bundle that does not match the contract (docs/bundle-format.md)."""
