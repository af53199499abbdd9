"""What extra per-token inputs cost the engine: docs/s of a BiLSTM-CRF bundle with and
without bigram + jieba-lexicon features on a corpus, in one process, and the share of
the CPU time spent computing the features and laying them out in batches
(TokenFeatures.compute and stages.scatter_batches, timed in place).

The two models share everything but the features and are not trained (speed does not
depend on the weights). Prints one JSON object.

    python scripts/features_engine_cost.py --corpus artifacts/sample_zh.parquet
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq


def build_bundle(kind: str, train, features, folder: Path, precision: str) -> Path:
    import torch

    from nere.export.bundle import write_bundle
    from nere.train.checkpoint import TOKENIZER, load_checkpoint, save_checkpoint
    from nere.train.ner_task import build_ner

    torch.manual_seed(0)
    model, tok, _, _ = build_ner(kind, train, vocab_min_freq=2, features=features)
    ck = save_checkpoint(model, tok, folder / "ck", {})
    model, _, config = load_checkpoint(ck)
    out, _ = write_bundle(model, config, ck / TOKENIZER, folder / "bundle", precision, checkpoint=ck)
    return out


class Clock:
    """CPU seconds spent inside ``owner.attr`` (any thread) while in the ``with`` block."""

    def __init__(self, owner, attr: str) -> None:
        self.owner, self.attr, self.seconds = owner, attr, 0.0
        self.lock = threading.Lock()

    def __enter__(self):
        self.original = original = getattr(self.owner, self.attr)
        clock = self

        def timed(*args, **kwargs):
            t = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                with clock.lock:
                    clock.seconds += time.thread_time() - t

        setattr(self.owner, self.attr, timed)
        return self

    def __exit__(self, *exc) -> None:
        setattr(self.owner, self.attr, self.original)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="artifacts/sample_zh.parquet")
    ap.add_argument("--train-limit", type=int, default=5000)
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from nere.engine import Engine, stages
    from nere.engine.core import features
    from nere.train.datasets import load_dataset

    train = load_dataset("msra", "train", limit=args.train_limit)
    table = pq.read_table(args.corpus, columns=["id", "text"])
    chars = sum(len(t) for t in table.column("text").to_pylist())
    settings = {"none": None,
                "bigrams+lexicon": {"bigrams": True, "bigram_min_freq": 3, "lexicon": "jieba", "lexicon_min_count": 2}}
    out: dict = {"corpus": args.corpus, "documents": table.num_rows, "characters": chars,
                 "precision": args.precision, "threads": args.threads, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        engines = {}
        for name, feats in settings.items():
            folder = build_bundle("bilstm-crf", train, feats, Path(tmp) / name, args.precision)
            engines[name] = Engine.load(folder, device="cpu", threads=args.threads)
            made = json.loads((folder / "manifest.json").read_text())
            out["runs"][name] = {"bundle_bytes": made["made_by"]["bundle_bytes"], "features": made.get("features"),
                                 "variant": made["made_by"].get("variant"), "wall": [], "cpu": [], "feature_cpu": [],
                                 "scatter_cpu": []}
        for _ in range(args.repeats):  # alternate, so load from other jobs hits both alike
            for name, engine in engines.items():
                with Clock(features.TokenFeatures, "compute") as clock, Clock(stages, "scatter_batches") as scatter:
                    wall, cpu = time.perf_counter(), time.process_time()
                    engine.extract(table)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                r = out["runs"][name]
                r["wall"].append(round(wall, 3))
                r["cpu"].append(round(cpu, 3))
                r["feature_cpu"].append(round(clock.seconds, 4))
                r["scatter_cpu"].append(round(scatter.seconds, 4))
    for r in out["runs"].values():
        best = min(range(len(r["wall"])), key=lambda k: r["wall"][k])
        r["docs_per_s"] = round(out["documents"] / r["wall"][best], 1)
        r["feature_share_of_cpu"] = round((r["feature_cpu"][best] + r["scatter_cpu"][best]) / r["cpu"][best], 4)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
