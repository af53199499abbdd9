"""Stage-1 speed of several bundles in one process: docs/s on the same sentences, alternating.

    python scripts/int8_stage1_speed.py FP32_BUNDLE INT8_BUNDLE... --dataset conll04 --split dev --threads 1

Each bundle is opened with the engine's loader (its onnxruntime session options), the
sentences are featurized once with the first bundle's featurizer (every bundle of one
checkpoint shares the tokenizer) and packed into the engine's length-sorted token-budget
batches; then the bundles take turns running every batch through their stage-1 graph
(``emissions`` and, where the graph has it, ``hidden``), ``--rounds`` times, so machine
load hits all of them alike. Reported: median docs/s per bundle and its ratio to the first.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from nere.engine.bundle import load_bundle
from nere.engine.stages import plan_batches, run_stage1
from nere.train.datasets import load_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", help="the first is the reference (fp32)")
    ap.add_argument("--dataset", default="conll04")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch-tokens", type=int, default=4096, help="padded tokens per batch")
    args = ap.parse_args()

    bundles = [load_bundle(b, device="cpu", threads=args.threads) for b in args.bundles]
    feat = bundles[0].featurizer
    texts = [ex.text for ex in load_dataset(args.dataset, args.split)]
    items = [feat.truncate(it)[0] for it in feat.tokenize(texts)]
    lengths = np.array([len(it.ids) for it in items])
    batches = [feat.collate([items[i] for i in rows]) for rows in plan_batches(lengths, feat, args.batch_tokens)]
    outputs = [[o for o in ("emissions", "hidden") if o in b.stage1.outputs] for b in bundles]
    for b, outs in zip(bundles, outputs):  # warm-up: first-call allocations out of the timings
        run_stage1(b.stage1, batches[0], outs)
    secs: list[list[float]] = [[] for _ in bundles]
    for _ in range(args.rounds):
        for k, (b, outs) in enumerate(zip(bundles, outputs)):
            t = time.perf_counter()
            for batch in batches:
                run_stage1(b.stage1, batch, outs)
            secs[k].append(time.perf_counter() - t)
    base = len(texts) / statistics.median(secs[0])
    for path, s in zip(args.bundles, secs):
        rate = len(texts) / statistics.median(s)
        print(json.dumps({"bundle": path, "docs": len(texts), "threads": args.threads, "rounds": args.rounds,
                          "docs_per_s": round(rate, 2), "ratio_to_first": round(rate / base, 3),
                          "seconds": [round(x, 3) for x in s]}))


if __name__ == "__main__":
    main()
