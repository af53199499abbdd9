"""CPU time of the engine's functions inside real threaded Engine.run calls.

    python scripts/engine_cpu_by_function.py runs/bundles/conll04-ner-bilstm-crf-int8 \
        --corpus runs/corpus/en-10k.parquet --limit 4000 --runs 3

Wraps the pipeline's steps with thread CPU clocks (``time.thread_time`` around each call,
in whichever thread runs it: the reader thread prepares, the calling thread decodes and
writes, the workers run the model) and prints microseconds of CPU per document for each,
beside the process's total; nested steps count inside their callers too (``prepare``
holds ``split_sentences`` and ``tokenize_flat``, ``_decode`` holds ``decode_tags``, which
holds the Viterbi's ``certified_path``, ``_search_islands`` and ``search_sorted``). The
wrappers add ~1 us per call. For one intra-op thread per call (the default 2 streams at
2 threads) ``run_stage1`` is all of the model's CPU.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nere.engine.core.featurize as featurize_module
import nere.engine.core.viterbi as viterbi_module
import nere.engine.parquet_io as parquet_io_module
import nere.engine.pipeline as pipeline_module
import nere.engine.relations as relations_module
from nere.cpu_clock import CallClock
from nere.engine.api import Engine

clock = CallClock()
totals = clock.seconds


def clocked(owner: object, name: str) -> None:
    clock.install(owner, [name])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--limit", type=int, default=4000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--streams", type=int, default=None)
    ap.add_argument("--batch-tokens", type=int, default=None)
    args = ap.parse_args()

    for name in ("run_stage1", "run_stage2", "split_sentences", "check_texts", "decode_tags", "span_scores",
                 "_unit_spans", "plan_batches"):
        clocked(pipeline_module, name)
    for name in ("prepare", "_decode", "_found", "_assemble", "_tables"):
        clocked(pipeline_module.Pipeline, name)
    clocked(relations_module.Relations, "of_unit")  # a separate RE bundle's relations
    clocked(pipeline_module.Prepared, "rows_batches")
    clocked(featurize_module.Featurizer, "tokenize_flat")
    for name in ("certified_path", "_search_islands", "search_sorted"):  # inside decode_tags: the Viterbi's parts
        clocked(viterbi_module, name)
    clocked(parquet_io_module.RunState, "commit")
    engine = Engine.load(args.bundle, device="cpu", threads=args.threads, streams=args.streams,
                         batch_tokens=args.batch_tokens)
    process = 0.0
    with tempfile.TemporaryDirectory() as d:
        engine.run(args.corpus, Path(d) / "warm", limit=min(args.limit, 500), progress=False)
        totals.clear()
        for r in range(args.runs):
            cpu = time.process_time()
            engine.run(args.corpus, Path(d) / f"run{r}", limit=args.limit, progress=False)
            process += time.process_time() - cpu
    us = 1e6 / (args.limit * args.runs)
    model = totals["run_stage1"] + totals["run_stage2"]
    print(f"process {process * us:.1f} us/doc; model calls {model * us:.1f}; the rest (engine) {(process - model) * us:.1f}")
    for name, seconds in totals.most_common():
        print(f"  {name:20s} {seconds * us:7.1f}")


if __name__ == "__main__":
    main()
