"""The glibc allocator tuning: applied once, measurable through mallinfo2, and optional."""
from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from nere.engine import allocator

glibc = allocator._glibc()
needs_glibc = pytest.mark.skipif(glibc is None or not hasattr(glibc, "mallinfo2"),
                                 reason="the allocator knobs exist only in glibc (mallinfo2: 2.33+)")

# A child process, so the tuning (process-wide, permanent) does not leak into other tests:
# prints the bytes held in separately mmapped blocks while a 4 MB numpy array is alive.
CHILD = r"""
import ctypes, sys
import numpy as np
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
if sys.argv[1] == "tune":
    from nere.engine import allocator
    assert allocator.tune_allocator() is allocator.tune_allocator()  # once per process
before = libc.mallinfo2().hblkhd
a = np.ones(4 << 20, dtype=np.uint8)
print(libc.mallinfo2().hblkhd - before)
"""


def _mmapped_bytes(mode: str, env: dict[str, str] | None = None) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True, env=env)
    return int(out.stdout.strip())


@needs_glibc
def test_tuned_allocator_serves_mid_sized_arrays_from_the_heap():
    assert _mmapped_bytes("plain") >= 4 << 20  # glibc's default: a fresh mapping per array
    assert _mmapped_bytes("tune") == 0  # below the raised threshold: from the heap, reused


@needs_glibc
def test_tuning_reports_its_settings(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", None)
    calls = []
    monkeypatch.setattr(allocator, "_glibc", lambda: _FakeLibc(calls))
    got = allocator.tune_allocator()
    assert got == {"library": "glibc 9.99", "mmap_threshold": allocator.MMAP_THRESHOLD,
                   "trim_threshold": allocator.TRIM_THRESHOLD}
    assert calls == [(allocator.M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD),
                     (allocator.M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD)]
    assert allocator.allocator_settings() == got
    assert allocator.tune_allocator() is got and len(calls) == 2  # once


class _FakeLibc:
    def __init__(self, calls: list) -> None:
        self.calls = calls

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1

    def gnu_get_libc_version(self) -> bytes:
        return b"9.99"


@pytest.mark.parametrize("value", ["0", "off", "False"])
def test_env_switch_leaves_the_allocator_alone(monkeypatch, value):
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setenv(allocator.ENV, value)
    monkeypatch.setattr(allocator, "_glibc", lambda: pytest.fail("must not touch the C library"))
    assert allocator.tune_allocator() is None
    assert allocator.allocator_settings() is None


def test_refused_or_missing_knobs_change_nothing(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.delenv(allocator.ENV, raising=False)
    monkeypatch.setattr(allocator, "_glibc", lambda: None)  # musl, macOS, Windows
    assert allocator.tune_allocator() is None
    refusing = _FakeLibc([])
    refusing.mallopt = lambda param, value: 0
    monkeypatch.setattr(allocator, "_glibc", lambda: refusing)
    assert allocator.tune_allocator() is None


@needs_glibc
@pytest.mark.parametrize("env, tuned", [({}, True), ({allocator.ENV: "0"}, False)])
def test_nere_extract_tunes_the_allocator_unless_the_env_says_no(tmp_path, env, tuned):
    """``nere extract`` owns its process and tunes the allocator; NERE_TUNE_ALLOCATOR=0
    opts out. A library Engine leaves it alone (EngineConfig.tune_allocator=False)."""
    import json
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from fixtures_bundles import make_bundle
    from nere.engine.config import EngineConfig

    assert EngineConfig().tune_allocator is False
    bundle = make_bundle(tmp_path / "b", kind="word")
    pq.write_table(pa.table({"id": [1, 2], "text": ["alice smith works for acme corp", "bob"]}), tmp_path / "c.parquet")
    out = tmp_path / "out"
    run_env = {k: v for k, v in os.environ.items() if k != allocator.ENV} | env
    subprocess.run([sys.executable, "-m", "nere.cli", "extract", str(tmp_path / "c.parquet"), "--model", str(bundle),
                    "--out", str(out), "--device", "cpu", "--threads", "1", "--no-progress"],
                   check=True, capture_output=True, env=run_env)
    settings = json.loads((out / "summary.json").read_text())["allocator"]
    assert (settings is not None) == tuned
