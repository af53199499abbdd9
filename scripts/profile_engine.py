"""Where the engine's time goes: cProfile of serial passes over a corpus slice.

    python scripts/profile_engine.py BUNDLE --corpus runs/corpus/zh-10k.parquet --docs 500 --threads 2
    python scripts/profile_engine.py NER_BUNDLE --re-model RE_BUNDLE --corpus runs/corpus/en-10k.parquet --docs 200

Runs `Pipeline.prepare` + `Pipeline.infer(overlap=False)` (every step in turn, so the
profile attributes time cleanly) on the first ``--docs`` documents as one unit: two warm-up
passes, then ``--passes`` profiled ones; prints seconds per pass and the top functions.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import pyarrow.parquet as pq

from nere.engine.api import Engine
from nere.engine.pipeline import Unit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--re-model", default=None, help="a separate RE bundle behind the NER bundle")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--docs", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--streams", type=int, default=1,
                    help="engine streams (sets threads per model call; the passes here are serial) [default: 1]")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--top", type=int, default=18)
    args = ap.parse_args()

    table = pq.read_table(args.corpus, columns=["id", "text"]).slice(0, args.docs)
    pipe = Engine.load(args.bundle, re_bundle=args.re_model, device="cpu", threads=args.threads, streams=args.streams).pipeline
    unit = Unit(table.column("id").combine_chunks(), table.column("text").to_pylist())
    for _ in range(2):
        pipe.infer(pipe.prepare(unit), overlap=False)
    prof = cProfile.Profile()
    started = time.perf_counter()
    prof.enable()
    for _ in range(args.passes):
        pipe.infer(pipe.prepare(unit), overlap=False)
    prof.disable()
    print(f"serial pass: {(time.perf_counter() - started) / args.passes:.4f} s")
    pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
