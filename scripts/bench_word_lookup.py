"""CPU time of the word table's two lookups (Arrow vs one dict lookup per token), same tokens.

    python scripts/bench_word_lookup.py runs/bundles/conll04-ner-bilstm-crf-int8 --corpus runs/corpus/en-10k.parquet

Encodes the sentences of the first ``--docs`` documents (units of ``UNIT_DOCS``, as the engine cuts
them) with the bundle's ``WordTable``, once forcing the per-token dict lookup (the path
kept for texts beyond int32 byte offsets) and once with Arrow's dictionary encoding, in
turns; prints the median CPU microseconds per document of each.
"""
from __future__ import annotations

import argparse
import statistics
import time

import pyarrow.parquet as pq

import nere.engine.core.vocab_tokens as vocab_tokens
from nere.engine.api import UNIT_DOCS, Engine
from nere.engine.segment import split_sentences


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--docs", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    table = Engine.load(args.bundle, device="cpu", threads=1).pipeline.ner.featurizer.array_tokenizer
    if not isinstance(table, vocab_tokens.WordTable):
        raise SystemExit(f"{args.bundle}: its tokenizer is not the word form")
    texts = pq.read_table(args.corpus, columns=["text"]).slice(0, args.docs).column("text").to_pylist()
    units = [[t[s:e] for t in texts[i:i + UNIT_DOCS] for s, e in split_sentences(t)]
             for i in range(0, len(texts), UNIT_DOCS)]
    spent: dict[str, list[float]] = {"dict": [], "arrow": []}
    limit = vocab_tokens._ARROW_MAX_POINTS
    for _ in range(args.rounds):
        for name, points in (("dict", 0), ("arrow", limit)):
            vocab_tokens._ARROW_MAX_POINTS = points
            t0 = time.process_time()
            for unit in units:
                table.encode(unit)
            spent[name].append(1e6 * (time.process_time() - t0) / len(texts))
    vocab_tokens._ARROW_MAX_POINTS = limit
    print({k: round(statistics.median(v), 1) for k, v in spent.items()},
          f"CPU us per document, median of {args.rounds}")


if __name__ == "__main__":
    main()
