"""glibc malloc settings for the engine's many short-lived arrays of 0.1-16 MB.

glibc serves a request above its mmap threshold (128 KiB at start, raised only as larger
blocks are freed) with a fresh ``mmap`` and unmaps it on free, and it hands the free top
of a heap back to the OS beyond its trim threshold. Either way the next array of that
size touches new pages, and every page is a page fault. The engine makes such arrays for
every batch and decoding group (emissions, Viterbi scores, gathers, token arrays), so
those faults cost the engine noticeable time (docs/benchmarks.md). Raising both
thresholds keeps freed blocks in the process for reuse: arrays up to 16 MB come from the
heap, and up to 64 MB of free heap stays mapped.

This is a process-wide setting, so a library leaves it alone by default:
``EngineConfig(tune_allocator=True)`` asks :class:`~nere.engine.api.Engine` to apply it
(once per process; ``describe()`` says so), and ``nere extract``, which owns its process,
always asks. ``NERE_TUNE_ALLOCATOR=0`` still opts out. Only glibc has these knobs; on any
other C library nothing is changed.
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 16 << 20  # bytes: larger requests still get their own mapping
TRIM_THRESHOLD = 64 << 20  # bytes of free heap top kept mapped
ENV = "NERE_TUNE_ALLOCATOR"

_applied: dict[str, Any] | None = None


def _glibc() -> Any | None:
    """The process's C library if it is glibc, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def tune_allocator() -> dict[str, Any] | None:
    """Raise glibc's mmap and trim thresholds (once per process); returns the settings
    applied, or None when not applied (not glibc, or ``NERE_TUNE_ALLOCATOR=0``)."""
    global _applied
    if _applied is not None:
        return _applied
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    libc = _glibc()
    if libc is None:
        return None
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        return None
    _applied = {"library": "glibc " + libc.gnu_get_libc_version().decode(),
                "mmap_threshold": MMAP_THRESHOLD, "trim_threshold": TRIM_THRESHOLD}
    return _applied


def allocator_settings() -> dict[str, Any] | None:
    """What :func:`tune_allocator` applied in this process (None if nothing)."""
    return _applied
