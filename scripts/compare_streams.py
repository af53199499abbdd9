"""End-to-end engine throughput at two stage-1 stream counts, in turns in one process.

    python scripts/compare_streams.py artifacts/zh-msra-ner-bilstm-crf-int8 \
        --corpus runs/corpus/zh-10k.parquet --limit 2000 --rounds 8 --streams 2 --streams 3

Why: `nere bench --streams A --streams B` runs each setting's repeats as a block, and its
e2e / model-only ratios move with the machine's noise in both terms. Here two engines
(same bundle and thread budget) take turns on the same documents, in alternating order.
The ratio within each round is what counts. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from nere.engine.api import Engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--streams", type=int, action="append", help="exactly two values, e.g. --streams 2 --streams 3")
    args = ap.parse_args()
    settings = args.streams or [2, 3]
    if len(settings) != 2:
        ap.error("give --streams exactly twice")
    a, b = settings
    engines = {s: Engine.load(args.bundle, device="cpu", threads=args.threads, streams=s) for s in (a, b)}
    walls: dict[int, list[float]] = {a: [], b: []}
    with tempfile.TemporaryDirectory() as d:
        for s, engine in engines.items():  # warm-up, not timed
            engine.run(args.corpus, Path(d) / f"warm{s}", limit=min(500, args.limit), progress=False)
        for r in range(args.rounds):
            for s in ((a, b) if r % 2 == 0 else (b, a)):
                start = time.perf_counter()
                engines[s].run(args.corpus, Path(d) / f"r{r}-s{s}", limit=args.limit, progress=False)
                walls[s].append(time.perf_counter() - start)
    ratios = [x / y for x, y in zip(walls[a], walls[b])]
    print(json.dumps({
        "bundle": args.bundle, "documents": args.limit, "rounds": args.rounds, "threads": args.threads,
        f"docs_per_s_streams_{a}": round(args.limit / statistics.median(walls[a]), 1),
        f"docs_per_s_streams_{b}": round(args.limit / statistics.median(walls[b]), 1),
        f"speedup_{b}_over_{a}_median": round(statistics.median(ratios), 3),
        "per_round": [round(x, 3) for x in ratios],
    }))


if __name__ == "__main__":
    main()
