"""Where an RE bundle's stage 2 spends its time: onnxruntime's own profile, per operator.

    python scripts/profile_stage2.py RE_BUNDLE --ner runs/bundles/conll04-ner-bilstm-crf-int8 \
        --corpus runs/corpus/en-10k.parquet --limit 200 --threads 2

Runs the engine once over the documents with the RE bundle behind the NER bundle and
records every stage-2 feed it makes (the real pairs and widths), then replays them on a
profiling onnxruntime session of the bundle's stage-2 graph (one warm-up pass, one
profiled pass) and prints the pass's wall time and each operator type's and node's share
of kernel time.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq

from nere.engine import Engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", help="RE bundle")
    ap.add_argument("--ner", required=True, help="NER bundle in front of it")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()

    feeds: list[dict[str, np.ndarray]] = []
    real_run = ort.InferenceSession.run

    def recording_run(self, names, inputs, *rest, **kw):  # stage 2 is the graph fed pair_index
        if "pair_index" in inputs:
            feeds.append({k: np.array(v) for k, v in inputs.items()})
        return real_run(self, names, inputs, *rest, **kw)

    table = pq.read_table(args.corpus, columns=["id", "text"]).slice(0, args.limit)
    engine = Engine.load(args.ner, re_bundle=args.bundle, device="cpu", threads=args.threads, streams=1)
    ort.InferenceSession.run = recording_run
    try:
        engine.extract_all(table)
    finally:
        ort.InferenceSession.run = real_run
    pairs = sum(f["pair_index"].shape[0] for f in feeds)
    print(f"{len(feeds)} stage-2 calls, {pairs} pairs, widths {sorted({f['hidden'].shape[1] for f in feeds})}")

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.enable_profiling = True
    session = ort.InferenceSession(str(Path(args.bundle) / "re.onnx"), opts, providers=["CPUExecutionProvider"])
    for f in feeds:
        session.run(None, f)
    started = time.perf_counter()
    for f in feeds:
        session.run(None, f)
    wall = time.perf_counter() - started
    profile = Path(session.end_profiling())
    by_op: Counter = Counter()
    by_node: Counter = Counter()
    events = json.loads(profile.read_text())
    profile.unlink()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
            by_node[e["name"][: -len("_kernel_time")]] += e["dur"]
    total = sum(by_op.values()) or 1
    print(f"stage 2, one pass: {wall:.3f} s (both passes profiled: warm-up and timed)")
    print("by operator: " + ", ".join(f"{k} {v / total:.1%}" for k, v in by_op.most_common(args.top)))
    print("by node: " + ", ".join(f"{k} {v / total:.1%}" for k, v in by_node.most_common(args.top)))


if __name__ == "__main__":
    main()
