"""End-to-end engine throughput of an earlier git revision vs the working tree, in turns.

    python scripts/compare_engine_revs.py --rev 69c21e1 BUNDLE [--re-model RE_BUNDLE] \
        --corpus runs/corpus/zh-10k.parquet --limit 500 --threads 2 --streams 2 --rounds 5
    python scripts/compare_engine_revs.py --rev HEAD --old-env NERE_TUNE_ALLOCATOR=0 BUNDLE ...

Extracts the engine, cli and train packages of ``--rev`` (``git archive``) into a temporary
folder laid out as the ``nere`` package, then alternates child processes of the old and
the current code, each timing ``Engine.run`` (read -> tables written as Parquet) on the
same documents after a warm-up run; machines are noisy, so what counts is the ratio within
each round. Checks that both revisions write identical entity and relation tables.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

CHILD = r"""
import hashlib, json, sys, tempfile, time
from pathlib import Path
import pyarrow.parquet as pq
from nere.engine.api import Engine

bundle, re_model, corpus, limit, threads, streams, runs = json.loads(sys.argv[1])
eng = Engine.load(bundle, re_bundle=re_model, device="cpu", threads=threads, streams=streams)

def once():
    with tempfile.TemporaryDirectory() as d:
        started = time.perf_counter()
        eng.run(corpus, Path(d) / "out", limit=limit, progress=False)
        seconds = time.perf_counter() - started
        digest = hashlib.sha256()
        for name in ("entities", "relations"):
            for path in sorted((Path(d) / "out" / name).glob("*.parquet")):
                digest.update(repr(pq.read_table(path).to_pylist()).encode())
        return seconds, digest.hexdigest()

once()
times, digests = zip(*(once() for _ in range(runs)))
print(json.dumps({"seconds": list(times), "digest": digests[0], "same_each_run": len(set(digests)) == 1}))
"""

PACKAGES = {"cli": "nere", "engine": "nere/engine", "train": "nere/train", "export": "nere/export"}


def old_tree(rev: str, into: Path) -> Path:
    """The ``nere`` package of ``rev`` under ``into`` (pyproject's package-dir mapping)."""
    archive = into / "rev.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), rev, *PACKAGES], check=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            top, _, rest = member.name.partition("/")
            member.name = f"{PACKAGES[top]}/{rest}" if rest else PACKAGES[top]
            tar.extract(member, into, filter="data")
    return into


def child(pythonpath: str | None, args: list, extra_env: dict[str, str] | None = None) -> dict:
    """One timing child; ``pythonpath`` puts an earlier revision's package first;
    ``extra_env`` is set in its environment."""
    env = {**os.environ, **(extra_env or {})}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--rev", required=True, help="the earlier git revision")
    ap.add_argument("--re-model", default=None)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--streams", type=int, default=None, help="engine streams [default: the engine's own choice]")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per child [default: 3]")
    ap.add_argument("--old-env", action="append", default=[], metavar="KEY=VALUE",
                    help="set in the old side's environment only (repeatable), e.g. --rev HEAD "
                         "--old-env NERE_TUNE_ALLOCATOR=0 compares a setting rather than revisions")
    a = ap.parse_args()
    bad = [kv for kv in a.old_env if "=" not in kv]
    if bad:
        ap.error(f"--old-env needs KEY=VALUE, got {bad[0]!r}")
    old_env = dict(kv.split("=", 1) for kv in a.old_env)
    spec = [a.bundle, a.re_model, a.corpus, a.limit, a.threads, a.streams, a.runs]
    with tempfile.TemporaryDirectory() as tmp:
        old_path = str(old_tree(a.rev, Path(tmp)))
        ratios, old_best, new_best, digests = [], [], [], set()
        for r in range(a.rounds):
            old = child(old_path, spec, old_env)
            new = child(None, spec)
            o, n = min(old["seconds"]), min(new["seconds"])
            old_best.append(a.limit / o)
            new_best.append(a.limit / n)
            ratios.append(o / n)
            digests.update({("old", old["digest"]), ("new", new["digest"])})
            print(f"round {r + 1}: {a.rev} {a.limit / o:,.1f} docs/s, now {a.limit / n:,.1f} docs/s, x{o / n:.3f}",
                  flush=True)
    same = len({d for _, d in digests}) == 1
    print(json.dumps({"rev": a.rev, "old_env": old_env, "bundle": a.bundle, "re_model": a.re_model, "threads": a.threads,
                      "streams": a.streams, "old_docs_per_s_median": round(statistics.median(old_best), 1),
                      "new_docs_per_s_median": round(statistics.median(new_best), 1),
                      "speedup_median": round(statistics.median(ratios), 3),
                      "speedups": [round(x, 3) for x in ratios], "identical_tables": same}))


if __name__ == "__main__":
    main()
