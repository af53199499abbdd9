"""How much slower the engine's small numpy steps run right after a model call.

    python scripts/numpy_after_model_call.py runs/bundles/conll04-ner-bilstm-crf-int8 \
        --corpus runs/corpus/en-10k.parquet

Times a few steps (one stage-1 batch gathered, three small numpy calls, one tiny call,
pure Python) called in a loop, and called right after a stage-1 call, a 5 ms sleep, or a
pass over 32 MB: the median microseconds per call of each. The reason the engine
gathers a unit's batches in one loop and decodes groups of batches (docs/benchmarks.md,
"Engine overhead", items 24-27).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pyarrow.parquet as pq

from nere.engine.api import Engine
from nere.engine.pipeline import Unit
from nere.engine.stages import run_stage1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--docs", type=int, default=2000)
    args = ap.parse_args()

    table = pq.read_table(args.corpus, columns=["id", "text"]).slice(0, args.docs)
    pipe = Engine.load(args.bundle, device="cpu", threads=1, streams=1).pipeline
    f = pipe.ner.featurizer
    prep = pipe.prepare(Unit(table.column("id").combine_chunks(), table.column("text").to_pylist()))
    batches = prep.inputs
    middle = prep.batches[len(prep.batches) // 2]
    big = np.random.default_rng(0).random(4 << 20)  # 32 MB

    def python_loop() -> None:
        s = 0
        for i in range(2000):
            s += i

    def small_numpy() -> None:
        a = np.full((35, 128), 1, dtype=np.int64)
        (a * 2).sum()

    steps = {"gather one batch": lambda: prep.rows_batches(f, [middle])[0], "three numpy calls": small_numpy,
             "np.add(1, 2)": lambda: np.add(1, 2), "2,000-step Python loop": python_loop}
    between = {"nothing (a loop)": lambda b: None, "a stage-1 call": lambda b: run_stage1(pipe.ner.stage1, b, ["emissions"]),
               "a 5 ms sleep": lambda b: time.sleep(0.005), "a pass over 32 MB": lambda b: big.sum()}
    for step_name, step in steps.items():
        cells = []
        for gap_name, gap in between.items():
            times = []
            for batch in batches:
                gap(batch)
                started = time.perf_counter()
                step()
                times.append(time.perf_counter() - started)
            cells.append(f"after {gap_name}: {statistics.median(times) * 1e6:.1f}")
        print(f"{step_name:24s} " + "; ".join(cells) + " us")


if __name__ == "__main__":
    main()
