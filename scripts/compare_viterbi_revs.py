"""CRF decoding time of an earlier revision's Viterbi vs the working tree's, inside the engine.

    python scripts/compare_viterbi_revs.py --rev 2ce289f runs/bundles/conll04-ner-bilstm-crf-int8 \
        --corpus runs/corpus/en-10k.parquet --docs 2048 --rounds 5

Loads ``engine/core/viterbi.py`` of ``--rev`` (``git show``) as a module of its own, then
runs serial engine passes (``Pipeline.prepare`` + ``infer(overlap=False)``, units of
``UNIT_DOCS`` documents, as the engine cuts them) in turns with the old and the current decoder, timing only the decoding calls:
the emissions are the engine's own, in its own groups, with the allocator the engine
sets. Checks that both give identical entity tables; prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import pyarrow.parquet as pq

import nere.engine.pipeline as pipeline_module
from nere.engine.api import UNIT_DOCS, Engine
from nere.engine.pipeline import Unit
from revisions import old_module  # scripts/revisions.py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--rev", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--docs", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    old = old_module(args.rev, "engine/core/viterbi.py")
    pipe = Engine.load(args.bundle, device="cpu", threads=args.threads).pipeline
    if pipe.crf is None:
        raise SystemExit(f"{args.bundle}: not a CRF bundle")
    crf = pipe.crf
    spent = {"old": 0.0, "new": 0.0}
    which = ["new"]
    real_decode_tags = pipeline_module.decode_tags

    def decode_tags(emissions, lengths, _crf=None):
        t0 = time.perf_counter()
        if which[0] == "old":
            out = old.viterbi_decode(emissions, lengths, crf.trans, crf.start, crf.end)
        else:
            out = real_decode_tags(emissions, lengths, crf)
        spent[which[0]] += time.perf_counter() - t0
        return out

    pipeline_module.decode_tags = decode_tags
    table = pq.read_table(args.corpus, columns=["id", "text"]).slice(0, args.docs)
    units = [Unit(t.column("id").combine_chunks(), t.column("text").to_pylist())
             for t in (table.slice(i, UNIT_DOCS) for i in range(0, table.num_rows, UNIT_DOCS))]
    tables = {}
    for name in ("old", "new"):  # warm-up, and the tables to compare
        which[0] = name
        tables[name] = [pipe.infer(pipe.prepare(u), overlap=False).entities for u in units]
    identical = all(a.equals(b) for a, b in zip(tables["old"], tables["new"]))
    per_round = []
    for _ in range(args.rounds):
        got = {}
        for name in ("old", "new"):
            which[0] = name
            spent[name] = 0.0
            for u in units:
                pipe.infer(pipe.prepare(u), overlap=False)
            got[name] = 1e6 * spent[name] / table.num_rows
        per_round.append(got)
        print(f"old {got['old']:.1f} us/doc, new {got['new']:.1f} us/doc, x{got['old'] / got['new']:.2f}", flush=True)
    print(json.dumps({
        "rev": args.rev, "bundle": args.bundle, "documents": table.num_rows,
        "old_us_per_doc_median": round(statistics.median(r["old"] for r in per_round), 1),
        "new_us_per_doc_median": round(statistics.median(r["new"] for r in per_round), 1),
        "speedup_median": round(statistics.median(r["old"] / r["new"] for r in per_round), 3),
        "identical_tables": identical,
    }))


if __name__ == "__main__":
    main()
