"""Latency of small `Engine.extract_all` calls: the in-thread path vs the streaming path.

    python scripts/bench_small_calls.py BUNDLE --corpus runs/corpus/en-10k.parquet --docs 300 --rounds 5

An input of one unit whose rows fit one batch (the online case: a few documents per call)
runs in the calling thread; larger inputs go through the streaming path (a reader thread
preparing the next unit, stage 1 in worker threads). This times both paths on the same
one-document calls, in turn, in one process: ``extract_all`` as it is, and the streaming
path forced (``Pipeline.infer_stream`` over ``background``, which is what every call
took before). Prints the median milliseconds per call of each and their ratio, and checks
both give the same entities.
"""
from __future__ import annotations

import argparse
import statistics
import time

import pyarrow.parquet as pq

from nere.engine import Engine
from nere.engine.parquet_io import background
from nere.engine.pipeline import Unit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--docs", type=int, default=300, help="one call per document")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    table = pq.read_table(args.corpus, columns=["id", "text"]).slice(0, args.docs)
    docs = [table.slice(i, 1) for i in range(table.num_rows)]
    engine = Engine.load(args.bundle, device="cpu", threads=args.threads)
    pipe = engine.pipeline

    def streamed(doc):
        unit = Unit(doc.column("id").combine_chunks(), doc.column("text").to_pylist())
        return [r for _, r in pipe.infer_stream(background((u, pipe.prepare(u)) for u in [unit]))][0].entities

    same = all(engine.extract_all(d).entities.equals(streamed(d)) for d in docs[:50])
    ms: dict[str, list[float]] = {"in thread": [], "streaming": []}
    for _ in range(args.rounds):
        for name, call in (("in thread", lambda d: engine.extract_all(d)), ("streaming", streamed)):
            t0 = time.perf_counter()
            for d in docs:
                call(d)
            ms[name].append((time.perf_counter() - t0) / len(docs) * 1000)
    a, b = statistics.median(ms["in thread"]), statistics.median(ms["streaming"])
    print(f"{args.bundle}: one-document calls, {args.threads} threads: in thread {a:.2f} ms, streaming {b:.2f} ms "
          f"({b / a:.2f}x); rounds {', '.join(f'{x:.2f}/{y:.2f}' for x, y in zip(ms['in thread'], ms['streaming']))}; "
          f"same entities: {same}")


if __name__ == "__main__":
    main()
