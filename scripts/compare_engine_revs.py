"""End-to-end engine throughput of an earlier git revision vs the working tree, in turns.

    python scripts/compare_engine_revs.py --rev 69c21e1 BUNDLE [--re-model RE_BUNDLE] \
        --corpus runs/corpus/zh-10k.parquet --limit 500 --threads 2 --streams 2 --rounds 5
    python scripts/compare_engine_revs.py --rev HEAD --old-env NERE_TUNE_ALLOCATOR=0 BUNDLE ...

Extracts the engine, cli and train packages of ``--rev`` (``git archive``) into a temporary
folder laid out as the ``nere`` package, then alternates child processes of the old and
the current code, each timing ``Engine.run`` (read -> tables written as Parquet) on the
same documents after a warm-up run; machines are noisy, so what counts is the ratio within
each round. Also splits each run's process CPU time into the model's (the thread CPU time
inside the stage-1/stage-2 calls; with one intra-op thread per stream that is all of
onnxruntime's; so only reported for single-threaded calls and no separate RE bundle, whose
calls use the whole thread budget) and the engine's (the rest): the engine's CPU per
document moves less with the machine's noise than wall time does. Checks that both revisions write identical entity
and relation tables.
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
import hashlib, importlib.util, json, sys, tempfile, time
from pathlib import Path
import pyarrow.parquet as pq
import nere.engine.pipeline as pipeline_module
from nere.engine.api import Engine

bundle, re_model, corpus, limit, threads, streams, runs, clock_file, batch_tokens = json.loads(sys.argv[1])
spec = importlib.util.spec_from_file_location("cpu_clock", clock_file)  # this tree's, beside any revision
cpu_clock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cpu_clock)

eng = Engine.load(bundle, re_bundle=re_model, device="cpu", threads=threads, streams=streams,
                  batch_tokens=batch_tokens)
clock = cpu_clock.CallClock()
clock.install(pipeline_module, ["run_stage1", "run_stage2"], "model")
model_cpu = clock.seconds

def once():
    with tempfile.TemporaryDirectory() as d:
        model_cpu.clear()
        cpu0 = time.process_time()
        started = time.perf_counter()
        eng.run(corpus, Path(d) / "out", limit=limit, progress=False)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        digest = hashlib.sha256()
        for name in ("entities", "relations"):
            for path in sorted((Path(d) / "out" / name).glob("*.parquet")):
                digest.update(repr(pq.read_table(path).to_pylist()).encode())
        return seconds, digest.hexdigest(), cpu - model_cpu["model"], model_cpu["model"]

once()
times, digests, engine_cpu, model = zip(*(once() for _ in range(runs)))
# onnxruntime's own pool threads (more than one intra-op thread per call) escape the thread clock
one_thread = eng.describe()["threads_per_stream"] == 1 and re_model is None
print(json.dumps({"seconds": list(times), "digest": digests[0], "same_each_run": len(set(digests)) == 1,
                  "engine_cpu": list(engine_cpu), "model_cpu": list(model), "cpu_split": one_thread}))
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
    ap.add_argument("--batch-tokens", type=int, default=None, help="both sides [default: each engine's own choice]")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per child [default: 3]")
    ap.add_argument("--old-env", action="append", default=[], metavar="KEY=VALUE",
                    help="set in the old side's environment only (repeatable), e.g. --rev HEAD "
                         "--old-env NERE_TUNE_ALLOCATOR=0 compares a setting rather than revisions")
    a = ap.parse_args()
    bad = [kv for kv in a.old_env if "=" not in kv]
    if bad:
        ap.error(f"--old-env needs KEY=VALUE, got {bad[0]!r}")
    old_env = dict(kv.split("=", 1) for kv in a.old_env)
    spec = [a.bundle, a.re_model, a.corpus, a.limit, a.threads, a.streams, a.runs,
            str(Path(__file__).resolve().parent.parent / "cli" / "cpu_clock.py"), a.batch_tokens]
    with tempfile.TemporaryDirectory() as tmp:
        old_path = str(old_tree(a.rev, Path(tmp)))
        ratios, old_best, new_best, digests = [], [], [], set()
        cpu: dict[str, list[float]] = {"old_engine": [], "new_engine": [], "old_model": [], "new_model": []}
        us = 1e6 / a.limit
        for r in range(a.rounds):
            old = child(old_path, spec, old_env)
            new = child(None, spec)
            o, n = min(old["seconds"]), min(new["seconds"])
            old_best.append(a.limit / o)
            new_best.append(a.limit / n)
            ratios.append(o / n)
            split = old.get("cpu_split", False) and new.get("cpu_split", False)
            if split:
                for side, got in (("old", old), ("new", new)):
                    cpu[f"{side}_engine"].append(statistics.median(got["engine_cpu"]) * us)
                    cpu[f"{side}_model"].append(statistics.median(got["model_cpu"]) * us)
            digests.update({("old", old["digest"]), ("new", new["digest"])})
            line = f"round {r + 1}: {a.rev} {a.limit / o:,.1f} docs/s, now {a.limit / n:,.1f} docs/s, x{o / n:.3f}"
            if split:
                line += (f"; engine CPU {cpu['old_engine'][-1]:.1f} -> {cpu['new_engine'][-1]:.1f} us/doc, "
                         f"model CPU {cpu['old_model'][-1]:.1f} -> {cpu['new_model'][-1]:.1f}")
            print(line, flush=True)
    same = len({d for _, d in digests}) == 1
    print(json.dumps({"rev": a.rev, "old_env": old_env, "bundle": a.bundle, "re_model": a.re_model, "threads": a.threads,
                      "streams": a.streams, "batch_tokens": a.batch_tokens, "old_docs_per_s_median": round(statistics.median(old_best), 1),
                      "new_docs_per_s_median": round(statistics.median(new_best), 1),
                      "speedup_median": round(statistics.median(ratios), 3),
                      "speedups": [round(x, 3) for x in ratios],
                      "cpu_us_per_doc_median": {k: round(statistics.median(v), 1) for k, v in cpu.items()} if cpu["old_engine"]
                      else "not split (onnxruntime pool threads)",
                      "engine_cpu_ratio_median": round(statistics.median(
                          [o / n for o, n in zip(cpu["old_engine"], cpu["new_engine"])]), 3) if cpu["old_engine"] else None,
                      "identical_tables": same}))


if __name__ == "__main__":
    main()
