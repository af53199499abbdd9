"""End-to-end and model-only throughput of NER + a separate RE bundle per RE stream count,
in turns in one process.

    python scripts/compare_re_streams.py runs/bundles/conll04-ner-bilstm-crf-int8 \
        --re-model runs/bundles/conll04-re-acnn-int8 --corpus runs/corpus/en-10k.parquet \
        --limit 2000 --re-streams 1,2 --rounds 5 [--json docs/benchmarks/NAME.json]

One engine per ``re_streams`` value (its RE sessions on threads // re_streams threads; the
NER side at its defaults). Each is profiled once (``nere bench``'s serial pass, which
records the model calls); then every round runs, per value, ``Engine.run`` end to end
(read -> tables written as Parquet) and the replay of the recorded model calls alone on
``re_streams`` workers (as the engine runs the RE calls). Prints the medians over rounds of
documents/s of both and of the per-round speedup against the first value, and checks
that every value finds the same relations.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from nere.bench_measure import end_to_end, profile_pass
from nere.engine.api import Engine


def _relations(engine: Engine, corpus: str, limit: int) -> list[tuple]:
    table = pq.read_table(corpus).slice(0, limit)
    rels = engine.extract(table)[1]
    return sorted(zip(*(rels.column(c).to_pylist() for c in ("doc_id", "head_id", "tail_id", "label"))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--re-model", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--re-streams", default="1,2", help="comma-separated re_streams values [default: 1,2]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    values = [int(s) for s in args.re_streams.split(",")]

    engines = {v: Engine.load(args.bundle, args.re_model, device="cpu", threads=args.threads, re_streams=v)
               for v in values}
    same = len({tuple(_relations(e, args.corpus, args.limit)) for e in engines.values()}) == 1
    recorders = {v: profile_pass(e, args.corpus, args.limit).recorder for v, e in engines.items()}
    e2e: dict[int, list[float]] = {v: [] for v in values}
    model: dict[int, list[float]] = {v: [] for v in values}
    with tempfile.TemporaryDirectory() as d:
        for v in values:  # warm-up
            end_to_end(engines[v], args.corpus, min(args.limit, 300), Path(d) / "warm")
        for r in range(args.rounds):
            for v in values:
                seconds, _ = end_to_end(engines[v], args.corpus, args.limit, Path(d) / "e2e")
                e2e[v].append(args.limit / seconds)
                model[v].append(args.limit / recorders[v].replay(max(v, engines[v].streams)))
            print(f"round {r + 1}: " + "; ".join(f"re_streams {v}: {e2e[v][-1]:,.0f} / {model[v][-1]:,.0f}"
                                                 for v in values) + " docs/s (end to end / model only)", flush=True)
    first = values[0]
    rows = [{
        "re_streams": v, "re_threads_per_stream": engines[v].re_call_threads,
        "e2e_docs_per_s_median": round(statistics.median(e2e[v])),
        "model_only_docs_per_s_median": round(statistics.median(model[v])),
        "e2e_over_model_only_median": round(statistics.median(x / y for x, y in zip(e2e[v], model[v])), 3),
        f"e2e_speedup_vs_{first}_median": round(statistics.median(x / y for x, y in zip(e2e[v], e2e[first])), 3),
        "e2e_docs_per_s": [round(x) for x in e2e[v]], "model_only_docs_per_s": [round(x) for x in model[v]],
    } for v in values]
    report = {"bundle": args.bundle, "re_model": args.re_model, "corpus": args.corpus, "limit": args.limit,
              "threads": args.threads, "rounds": args.rounds, "same_relations": same, "results": rows}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
