"""Error analysis of a joint checkpoint on a dataset split, or its output on sentences you give.

    python scripts/joint_errors.py CKPT --dataset conll04 --split dev [--json OUT]
    python scripts/joint_errors.py CKPT --sentences FILE   # one sentence a line: entities and triples

Entities: per-label P/R/F1, and each wrong prediction sorted into type error (gold span,
other type), boundary error (overlaps a gold entity of its type), boundary + type, or
spurious; each missed gold entity is either overlapped by some prediction or missed
outright. Triples (end to end): per-relation P/R/F1, and each wrong or missed triple
blamed on its entities (a span or type wrong) or on the relation head (both entities right).
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

from nere.engine.core.metrics import entity_scores, set_prf
from nere.engine.core.types import Entity, Example
from nere.train.checkpoint import load_checkpoint
from nere.train.datasets import load_dataset
from nere.train.ner_task import predict_ner
from nere.train.re_task import predict_re, type_pairs


def predict(model, featurizer, examples: list[Example]) -> tuple[list[list[tuple]], list[set]]:
    """Predicted entity spans and end-to-end triples, as evaluate_joint computes them."""
    spans = predict_ner(model, featurizer, examples)["spans"]
    ents = [[Entity(s, e, lab) for s, e, lab in sp] for sp in spans]
    triples = predict_re(model, featurizer, examples, entities=ents, type_pairs=type_pairs(model))["triples"]
    return spans, triples


def overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def entity_errors(gold: list[list[tuple]], pred: list[list[tuple]]) -> Counter:
    out: Counter = Counter()
    for g, p in zip(gold, pred):
        gset, gspan = set(g), {(s, e): lab for s, e, lab in g}
        for s in p:
            if s in gset:
                continue
            if (s[0], s[1]) in gspan:
                out["fp: type error (gold span, other type)"] += 1
            elif any(overlaps(s, x) and x[2] == s[2] for x in g):
                out["fp: boundary error (same type)"] += 1
            elif any(overlaps(s, x) for x in g):
                out["fp: boundary + type error"] += 1
            else:
                out["fp: spurious (no gold overlap)"] += 1
        pset = set(p)
        for x in g:
            if x in pset:
                continue
            out["fn: overlapped by a wrong prediction" if any(overlaps(x, s) for s in p) else "fn: missed outright"] += 1
    return out


def triple_errors(gold_t: list[set], pred_t: list[set], gold_e: list[list[tuple]], pred_e: list[list[tuple]]) -> Counter:
    out: Counter = Counter()
    for gt, pt, ge, pe in zip(gold_t, pred_t, gold_e, pred_e):
        gset, pset = set(ge), set(pe)
        for t in pt - gt:
            right = t[0] in gset and t[1] in gset
            out["fp: relation head (entities right)" if right else "fp: an entity wrong"] += 1
        for t in gt - pt:
            found = t[0] in pset and t[1] in pset
            out["fn: relation head (both entities found)" if found else "fn: an entity missed"] += 1
    return out


def per_relation(gold_t: list[set], pred_t: list[set]) -> dict[str, dict[str, float]]:
    labels = sorted({t[2] for s in gold_t for t in s} | {t[2] for s in pred_t for t in s})
    return {lab: set_prf([[t for t in s if t[2] == lab] for s in gold_t], [[t for t in s if t[2] == lab] for s in pred_t])
            for lab in labels}


def analyse(ckpt: str, dataset: str, split: str) -> dict[str, Any]:
    model, featurizer, _ = load_checkpoint(ckpt)
    examples = load_dataset(dataset, split)
    spans, triples = predict(model, featurizer, examples)
    gold_e = [[(e.start, e.end, e.label) for e in ex.entities] for ex in examples]
    gold_t = [ex.triples() for ex in examples]
    ner = entity_scores(gold_e, spans)
    return {"dataset": dataset, "split": split, "ner": ner, "entity_errors": dict(entity_errors(gold_e, spans)),
            "e2e": set_prf(gold_t, triples), "per_relation": per_relation(gold_t, triples),
            "triple_errors": dict(triple_errors(gold_t, triples, gold_e, spans))}


def show(ckpt: str, path: str) -> None:
    model, featurizer, _ = load_checkpoint(ckpt)
    with open(path, encoding="utf-8") as f:
        texts = [line.strip() for line in f if line.strip()]
    examples = [Example(t, [], [], id=str(i)) for i, t in enumerate(texts)]
    spans, triples = predict(model, featurizer, examples)
    for text, sp, tr in zip(texts, spans, triples):
        print(text)
        print("  entities:", "; ".join(f"{text[s:e]!r}/{lab}" for s, e, lab in sp) or "-")
        print("  triples: ", "; ".join(f"{text[h[0]:h[1]]!r} {r} {text[t[0]:t[1]]!r}" for h, t, r in sorted(tr)) or "-")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--dataset", default="conll04")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--sentences")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.sentences:
        show(a.checkpoint, a.sentences)
        return
    out = analyse(a.checkpoint, a.dataset, a.split)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    ner = out["ner"]
    print(f"{a.dataset}/{a.split}: NER P/R/F1 {ner['precision']:.4f} {ner['recall']:.4f} {ner['f1']:.4f};"
          f" e2e P/R/F1 {out['e2e']['precision']:.4f} {out['e2e']['recall']:.4f} {out['e2e']['f1']:.4f}")
    for lab, m in ner["per_label"].items():
        print(f"  entity {lab:6s} P {m['precision']:.3f} R {m['recall']:.3f} F1 {m['f1']:.3f}")
    for k, v in sorted(out["entity_errors"].items()):
        print(f"  {k}: {v}")
    for lab, m in out["per_relation"].items():
        print(f"  relation {lab:10s} P {m['precision']:.3f} R {m['recall']:.3f} F1 {m['f1']:.3f}")
    for k, v in sorted(out["triple_errors"].items()):
        print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
