"""End-to-end accuracy through the engine: dataset sentences in as documents, tables out.

    python scripts/engine_accuracy.py BUNDLE --dataset conll04 --split test [--checkpoint CKPT]
    python scripts/engine_accuracy.py NER_BUNDLE --re-model RE_BUNDLE [--re-streams N] --dataset conll04

Each test sentence becomes one document; the engine's entity and relation tables are
scored against the gold annotations with the same core metrics as `nere evaluate`
(strict entities; strict triples). With --checkpoint, the PyTorch checkpoint's own
test scores (its metrics.json, written by `nere train`) are printed beside them.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nere.engine import Engine
from nere.engine.score import score_bundle
from nere.train.datasets import load_dataset
from nere.train.datasets.policy import flat_entities


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--dataset", default="conll04")
    ap.add_argument("--split", default="test")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--re-model", default=None, help="a separate RE bundle behind the NER bundle")
    ap.add_argument("--re-streams", type=int, default=None, help="its calls at once [default: the engine's]")
    args = ap.parse_args()

    examples = load_dataset(args.dataset, args.split)
    engine = Engine.load(args.bundle, args.re_model, device="cpu", threads=args.threads, re_streams=args.re_streams)
    gold = [[(e.start, e.end, e.label) for e in flat_entities(ex.entities)[0]] for ex in examples]
    scores = score_bundle(engine, examples, gold)  # the scoring `nere evaluate BUNDLE` and --verify use
    report = {"bundle": args.bundle, "re_bundle": args.re_model, "re_streams": engine.describe()["re_streams"],
              "dataset": args.dataset, "split": args.split, "documents": len(examples),
              "engine_entities": scores["entities"]}
    if scores["triples"] is not None:
        report["engine_e2e"] = scores["triples"]
    if args.checkpoint:
        test = json.loads((Path(args.checkpoint) / "metrics.json").read_text())["test"]
        report["checkpoint_test"] = {k: test[k] for k in ("ner", "e2e") if k in test} or {"ner": test}
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
