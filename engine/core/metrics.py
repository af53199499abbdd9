"""Metrics, one implementation for training, evaluation, export checks and the engine.

- NER: token accuracy; strict entity-level micro precision/recall/F1 (exact start,
  end and label) with per-label rows.
- RE on given entities: accuracy; precision/recall/F1 macro-averaged over relation
  labels excluding ``no_relation`` (as the NERE project reports) and micro over them.
- End to end: strict triple F1 (both spans and labels and the relation right).
"""
from __future__ import annotations

from collections import Counter
from typing import Hashable, Iterable, Sequence

from nere.engine.core.types import NO_RELATION


def prf(tp: int, n_pred: int, n_gold: int) -> dict[str, float]:
    """Precision, recall and F1 from counts (0 where undefined)."""
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "support": n_gold}


def set_prf(gold: Sequence[Iterable[Hashable]], pred: Sequence[Iterable[Hashable]]) -> dict[str, float]:
    """Micro P/R/F1 of predicted vs gold item sets, one set per sentence."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    tp = n_pred = n_gold = 0
    for g, p in zip(gold, pred):
        g, p = set(g), set(p)
        tp += len(g & p)
        n_pred += len(p)
        n_gold += len(g)
    return prf(tp, n_pred, n_gold)


Span = tuple[int, int, str]


def entity_scores(gold: Sequence[Iterable[Span]], pred: Sequence[Iterable[Span]]) -> dict:
    """Strict entity P/R/F1 (micro) plus ``per_label`` rows."""
    out = set_prf(gold, pred)
    labels = sorted({s[2] for sent in gold for s in sent} | {s[2] for sent in pred for s in sent})
    out["per_label"] = {
        lab: set_prf(
            [[s for s in sent if s[2] == lab] for sent in gold],
            [[s for s in sent if s[2] == lab] for sent in pred],
        )
        for lab in labels
    }
    return out


def token_accuracy(gold: Sequence[Sequence[Hashable]], pred: Sequence[Sequence[Hashable]]) -> float:
    """Share of tokens whose predicted tag equals the gold tag."""
    right = total = 0
    for g, p in zip(gold, pred, strict=True):
        if len(g) != len(p):
            raise ValueError("gold and predicted tag sequences differ in length")
        right += sum(a == b for a, b in zip(g, p))
        total += len(g)
    return right / total if total else 0.0


def relation_scores(gold: Sequence[str], pred: Sequence[str], negative: str = NO_RELATION) -> dict:
    """RE classification scores over candidate pairs.

    ``macro_*`` average per-label P/R/F1 over the labels (excluding ``negative``) seen in
    gold or predictions, as scikit-learn's ``precision_recall_fscore_support(labels=...,
    average='macro')`` does; ``micro_*`` pool those labels' counts.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    labels = sorted((set(gold) | set(pred)) - {negative})
    tp, n_pred, n_gold = Counter(), Counter(), Counter()
    for g, p in zip(gold, pred):
        n_gold[g] += 1
        n_pred[p] += 1
        if g == p:
            tp[g] += 1
    per_label = {lab: prf(tp[lab], n_pred[lab], n_gold[lab]) for lab in labels}
    k = len(labels) or 1
    micro = prf(sum(tp[l] for l in labels), sum(n_pred[l] for l in labels), sum(n_gold[l] for l in labels))
    return {
        "accuracy": sum(tp.values()) / len(gold) if gold else 0.0,
        "macro_precision": sum(r["precision"] for r in per_label.values()) / k,
        "macro_recall": sum(r["recall"] for r in per_label.values()) / k,
        "macro_f1": sum(r["f1"] for r in per_label.values()) / k,
        "micro_precision": micro["precision"],
        "micro_recall": micro["recall"],
        "micro_f1": micro["f1"],
        "per_label": per_label,
    }


Triple = tuple[Span, Span, str]


def triple_scores(gold: Sequence[Iterable[Triple]], pred: Sequence[Iterable[Triple]]) -> dict:
    """End-to-end strict relation triples: (head span+label, tail span+label, relation)."""
    return set_prf(gold, pred)
