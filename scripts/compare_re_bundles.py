"""Two RE bundles behind one NER bundle, timed in turn in one process: which is faster.

    python scripts/compare_re_bundles.py --ner NER_BUNDLE --re A_BUNDLE --re B_BUNDLE \
        --corpus CORPUS.parquet --limit 200 --rounds 5 --threads 2

`nere bench` compares NER bundles side by side but takes one `--re-model`; this runs the
same engine (`Engine.extract_all`, tables in memory) with each RE bundle in turn, round
after round, so the ratio of two RE graphs is read from one process on the same documents
(the machine's drift cancels out). Prints documents/s per bundle (median of the rounds),
the per-round ratio B / A, and whether the relation tables are identical (labels and
scores rounded to 1e-4), which they should be when B is a re-export of A's function.
"""
from __future__ import annotations

import argparse
import statistics
import time

import pyarrow.parquet as pq

from nere.engine import Engine


def relation_rows(table) -> list[tuple]:
    cols = table.to_pydict()
    return sorted(zip(cols["doc_id"], cols["head_id"], cols["tail_id"], cols["label"],
                      (round(s, 4) for s in cols["score"])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ner", required=True, help="NER bundle")
    ap.add_argument("--re", action="append", required=True, help="RE bundle (twice: A then B)")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--limit", type=int, default=200, help="first N documents")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if len(args.re) != 2:
        ap.error("give --re exactly twice")

    table = pq.read_table(args.corpus).slice(0, args.limit)
    engines = [Engine.load(args.ner, re_bundle=r, device="cpu", threads=args.threads) for r in args.re]
    outputs = [e.extract_all(table) for e in engines]  # warm-up, and the tables compared
    seconds: list[list[float]] = [[], []]
    for _ in range(args.rounds):
        for i, engine in enumerate(engines):
            t0 = time.perf_counter()
            engine.extract_all(table)
            seconds[i].append(time.perf_counter() - t0)
    docs = table.num_rows
    for name, s in zip(args.re, seconds):
        print(f"{name}: {docs / statistics.median(s):.1f} docs/s (rounds: {', '.join(f'{docs / x:.1f}' for x in s)})")
    ratios = [a / b for a, b in zip(*seconds)]
    print(f"B / A docs/s: median {statistics.median(ratios):.2f} (rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
    same = relation_rows(outputs[0].relations) == relation_rows(outputs[1].relations)
    print(f"relations: {outputs[0].relations.num_rows} vs {outputs[1].relations.num_rows} rows; identical: {same}")


if __name__ == "__main__":
    main()
