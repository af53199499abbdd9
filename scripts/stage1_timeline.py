"""How busy the engine keeps the model: timestamps of every stage-1 call during Engine.run.

    python scripts/stage1_timeline.py runs/bundles/conll04-ner-bilstm-crf-int8 \
        --corpus runs/corpus/en-10k.parquet --limit 2000 --runs 4

Wraps the pipeline's ``run_stage1`` and, per run, prints the share of the worker threads'
time spent inside onnxruntime, the idle time before the first call and after the last,
and, per worker thread, the gaps between its calls (the time it spent on anything else).
"""
from __future__ import annotations

import argparse
import collections
import tempfile
import threading
import time
from pathlib import Path

import nere.engine.pipeline as pipeline_module
from nere.engine.api import Engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--streams", type=int, default=None)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--batch-tokens", type=int, default=None)
    args = ap.parse_args()

    calls: list[tuple[int, float, float]] = []  # (thread, start, end)
    real = pipeline_module.run_stage1

    def timed(*a, **k):
        t0 = time.perf_counter()
        out = real(*a, **k)
        calls.append((threading.get_ident(), t0, time.perf_counter()))
        return out

    pipeline_module.run_stage1 = timed
    engine = Engine.load(args.bundle, device="cpu", threads=args.threads, streams=args.streams,
                         batch_tokens=args.batch_tokens)
    with tempfile.TemporaryDirectory() as d:
        engine.run(args.corpus, Path(d) / "warm", limit=min(args.limit, 256), progress=False)
        for r in range(args.runs):
            calls.clear()
            started = time.perf_counter()
            engine.run(args.corpus, Path(d) / f"run{r}", limit=args.limit, progress=False)
            wall = time.perf_counter() - started
            busy = sum(e - s for _, s, e in calls)
            first = min(s for _, s, _ in calls) - started
            last = started + wall - max(e for _, _, e in calls)
            print(f"run {r + 1}: {wall:.3f} s, onnxruntime busy {busy / (engine.streams * wall):.3f} of "
                  f"{engine.streams} worker(s); idle {1e3 * first:.0f} ms before the first call, "
                  f"{1e3 * last:.0f} ms after the last; {len(calls)} calls")
            by_thread: dict[int, list[tuple[float, float]]] = collections.defaultdict(list)
            for t, s, e in calls:
                by_thread[t].append((s, e))
            for spans in by_thread.values():
                spans.sort()
                gaps = [b[0] - a[1] for a, b in zip(spans, spans[1:])]
                print(f"   worker: {len(spans)} calls, gaps {1e3 * sum(gaps):.0f} ms in all, "
                      f"largest {1e3 * max(gaps, default=0):.1f} ms")


if __name__ == "__main__":
    main()
