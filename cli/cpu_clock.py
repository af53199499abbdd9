"""Thread CPU time spent inside chosen functions (the bench's and the scripts' CPU split).

:class:`CallClock` wraps functions so that every call adds the calling thread's CPU time
(``time.thread_time``) to a per-name total, in whichever thread calls it. Around the
engine's stage calls that is the model's CPU when each onnxruntime call runs on one
intra-op thread (the calling thread); onnxruntime's pool threads, used with more intra-op
threads, are not counted. It also keeps each name's wall-clock span (the first call's
start, the last call's end): the bench reports how long a run waits before its first model
call and after its last. And each name's wall time inside its calls, summed over threads:
divided by the span, the mean number of calls in flight (with two stage-1 streams, 2.0
means the model never waited for the engine). Imports nothing from the engine, so a
script can load this file beside an older revision of the package.
"""
from __future__ import annotations

import collections
import functools
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence


class CallClock:
    def __init__(self) -> None:
        self.seconds: collections.Counter = collections.Counter()
        self.wall: collections.Counter = collections.Counter()  # per key: wall seconds inside calls, all threads
        # per key: (perf_counter at the first call's start, at the last call's end), for the
        # wall time before the first call and after the last one (the bench's idle ends)
        self.span: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def wrap(self, real: Callable, key: str) -> Callable:
        @functools.wraps(real)
        def timed(*a: Any, **k: Any) -> Any:
            w0, t0 = time.perf_counter(), time.thread_time()
            try:
                return real(*a, **k)
            finally:
                spent, w1 = time.thread_time() - t0, time.perf_counter()
                with self._lock:
                    self.seconds[key] += spent
                    self.wall[key] += w1 - w0
                    first, last = self.span.get(key, (w0, w1))
                    self.span[key] = (min(first, w0), max(last, w1))

        return timed

    def install(self, owner: object, names: Sequence[str], key: str | None = None) -> None:
        """Wrap ``owner.<name>`` for each name, for good; totals under ``key`` (or the name)."""
        for name in names:
            setattr(owner, name, self.wrap(getattr(owner, name), key or name))

    @contextmanager
    def attached(self, owner: object, names: Sequence[str], key: str | None = None) -> Iterator["CallClock"]:
        """:meth:`install` until the block ends."""
        saved = {name: getattr(owner, name) for name in names}
        self.install(owner, names, key)
        try:
            yield self
        finally:
            for name, real in saved.items():
                setattr(owner, name, real)
