"""Where an RE bundle's stage 2 spends its time: onnxruntime's own profile, per operator.

    python scripts/profile_stage2.py RE_BUNDLE --ner runs/bundles/conll04-ner-bilstm-crf-int8 \
        --corpus runs/corpus/en-10k.parquet --limit 200 --threads 2

Opens the engine with the RE bundle behind the NER bundle, replaces the RE bundle's
stage-2 session by a profiling one (the engine's own session options otherwise), and runs
`nere bench`'s serial profile pass (`nere.bench_measure.profile_pass`) twice over the
documents: the second pass's stage-2 seconds are printed, and each operator type's and
node's share of kernel time over both passes.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import onnxruntime as ort

from nere.bench_measure import profile_pass
from nere.engine import Engine
from nere.engine.bundle import session_options


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", help="RE bundle")
    ap.add_argument("--ner", required=True, help="NER bundle in front of it")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()

    engine = Engine.load(args.ner, re_bundle=args.bundle, device="cpu", threads=args.threads, streams=1)
    graph = engine.re_bundle.stage2
    opts = session_options(args.threads)
    opts.enable_profiling = True
    graph.session = ort.InferenceSession(str(Path(args.bundle) / graph.file), opts, providers=["CPUExecutionProvider"])
    profile_pass(engine, args.corpus, args.limit)  # warm-up
    timed = profile_pass(engine, args.corpus, args.limit)
    profile = Path(graph.session.end_profiling())
    events = json.loads(profile.read_text())
    profile.unlink()
    by_op: Counter = Counter()
    by_node: Counter = Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
            by_node[e["name"][: -len("_kernel_time")]] += e["dur"]
    total = sum(by_op.values()) or 1
    print(f"stage 2: {timed.batches['stage2']} calls, {timed.phases['stage2']:.3f} s in the timed pass")
    print("by operator: " + ", ".join(f"{k} {v / total:.1%}" for k, v in by_op.most_common(args.top)))
    print("by node: " + ", ".join(f"{k} {v / total:.1%}" for k, v in by_node.most_common(args.top)))


if __name__ == "__main__":
    main()
