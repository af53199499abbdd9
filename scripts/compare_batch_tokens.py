"""End-to-end and model-only throughput per stage-1 batch size, in turns in one process.

    python scripts/compare_batch_tokens.py runs/bundles/conll04-ner-bilstm-crf-int8 \
        --corpus runs/corpus/en-10k.parquet --limit 4000 --sizes 512,1024,2048,4096 --rounds 6 \
        [--json docs/benchmarks/NAME.json]

One engine per ``batch_tokens`` value (default streams and threads otherwise). Each is
profiled once (``nere bench``'s serial pass, which records its model calls); then every
round runs, per size, ``Engine.run`` end to end (read -> tables written as Parquet) and
the replay of the recorded model calls alone (``nere bench``'s model-only figure). Prints
the medians over rounds of documents/s of both, of their ratio within each round, and the
number of stage-1 calls; machines are noisy, so only figures from the same rounds compare.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from nere.bench_measure import end_to_end, profile_pass
from nere.engine.api import Engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--limit", type=int, default=4000)
    ap.add_argument("--sizes", default="1024,4096", help="comma-separated batch_tokens values [default: 1024,4096]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    engines = {b: Engine.load(args.bundle, device="cpu", threads=args.threads, batch_tokens=b) for b in sizes}
    recorders = {b: profile_pass(e, args.corpus, args.limit).recorder for b, e in engines.items()}
    e2e: dict[int, list[float]] = {b: [] for b in sizes}
    model: dict[int, list[float]] = {b: [] for b in sizes}
    with tempfile.TemporaryDirectory() as d:
        for b in sizes:  # warm-up
            end_to_end(engines[b], args.corpus, min(args.limit, 500), Path(d) / "warm")
        for r in range(args.rounds):
            for b in sizes:
                seconds, _ = end_to_end(engines[b], args.corpus, args.limit, Path(d) / "e2e")
                e2e[b].append(args.limit / seconds)
                model[b].append(args.limit / recorders[b].replay(engines[b].streams))
            print(f"round {r + 1}: " + "; ".join(f"{b}: {e2e[b][-1]:,.0f} / {model[b][-1]:,.0f}" for b in sizes)
                  + " docs/s (end to end / model only)", flush=True)
    rows = []
    for b in sizes:
        rows.append({
            "batch_tokens": b, "streams": engines[b].streams, "stage1_calls": len(recorders[b].calls),
            "e2e_docs_per_s_median": round(statistics.median(e2e[b])),
            "model_only_docs_per_s_median": round(statistics.median(model[b])),
            "e2e_over_model_only_median": round(statistics.median(x / y for x, y in zip(e2e[b], model[b])), 3),
            "e2e_docs_per_s": [round(x) for x in e2e[b]], "model_only_docs_per_s": [round(x) for x in model[b]],
        })
        print(f"{b:6d} tokens: end to end {rows[-1]['e2e_docs_per_s_median']:,} docs/s, model only "
              f"{rows[-1]['model_only_docs_per_s_median']:,}, ratio {rows[-1]['e2e_over_model_only_median']}, "
              f"{rows[-1]['stage1_calls']} stage-1 calls")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "bundle": args.bundle, "corpus": args.corpus, "limit": args.limit, "threads": args.threads,
            "rounds": args.rounds, "sizes": rows}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
