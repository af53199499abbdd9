"""Thread CPU time spent inside chosen functions, for the measuring scripts.

``clock(owner, name, totals)`` replaces ``owner.name`` with a wrapper that adds the
calling thread's CPU time (``time.thread_time``) inside each call to ``totals[name]``,
in whichever thread calls it. For onnxruntime calls with one intra-op thread that is all
of the call's CPU; its pool threads (more intra-op threads) are not counted.
"""
from __future__ import annotations

import collections
import functools
import threading
import time

_lock = threading.Lock()


def clock(owner: object, name: str, totals: collections.Counter, key: str | None = None) -> None:
    real = getattr(owner, name)
    key = key or name

    @functools.wraps(real)
    def timed(*a, **k):
        t0 = time.thread_time()
        try:
            return real(*a, **k)
        finally:
            with _lock:
                totals[key] += time.thread_time() - t0

    setattr(owner, name, timed)
