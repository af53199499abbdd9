"""Engine.run with different unit sizes, in turns in one process: wall time and CPU split.

    python scripts/compare_unit_sizes.py runs/bundles/conll04-ner-bilstm-crf-int8 \
        --corpus runs/corpus/en-10k.parquet --limit 2000 --sizes 256,1024,2048 --rounds 4

For each round runs ``Engine(..., unit_docs=N).run(...)`` once per size and prints, per size,
the wall seconds of each round, the engine's CPU per document (process CPU time minus the
thread CPU time inside the model calls) and the model's. The split holds for one
intra-op thread per call (the default 2 streams at 2 threads), as in
scripts/compare_engine_revs.py.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import nere.engine.pipeline as pipeline_module
from nere.cpu_clock import CallClock
from nere.engine.api import Engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--sizes", default="256,1024", help="comma-separated unit_docs values [default: 256,1024]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--streams", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    clock = CallClock()
    clock.install(pipeline_module, ["run_stage1"], "model")
    model = clock.seconds
    engine = Engine.load(args.bundle, device="cpu", threads=args.threads, streams=args.streams)
    got: dict[int, list[tuple[float, float, float]]] = {s: [] for s in sizes}
    us = 1e6 / args.limit
    with tempfile.TemporaryDirectory() as d:
        engine.run(args.corpus, Path(d) / "warm", limit=min(args.limit, 500), progress=False)
        for r in range(args.rounds):
            for size in sizes:
                model.clear()
                cpu, started = time.process_time(), time.perf_counter()
                sized = Engine(engine.bundle, config=engine.config, unit_docs=size)  # the bundle's sessions are shared
                sized.run(args.corpus, Path(d) / f"r{r}-{size}", limit=args.limit, progress=False)
                wall, cpu = time.perf_counter() - started, time.process_time() - cpu
                got[size].append((wall, (cpu - model["model"]) * us, model["model"] * us))
    for size, runs in got.items():
        print(f"unit_docs {size:5d}: wall {' '.join(f'{w:.3f}' for w, _, _ in runs)} s "
              f"(median {statistics.median(w for w, _, _ in runs):.3f}); engine CPU "
              f"{' '.join(f'{e:.1f}' for _, e, _ in runs)} us/doc; model CPU {' '.join(f'{m:.0f}' for _, _, m in runs)}")


if __name__ == "__main__":
    main()
