"""Relation extraction end to end: build a kind for a dataset, train, predict, evaluate.

Mirrors ner_task.py. Evaluation is on gold entities and every candidate pair (core
``candidate_pairs``); pairs whose entities fell outside the model length are predicted
``no_relation`` and counted in the featurization stats.
"""
from __future__ import annotations

import random
from typing import Any, Collection, Sequence

import torch

from nere.engine.core.metrics import relation_scores
from nere.engine.core.types import NO_RELATION, Entity, Example
from nere.train.checkpoint import featurizer_from
from nere.train.evaluators import register_evaluator
from nere.train.features import length_batches
from nere.train.prepare import prepare_text_side
from nere.train.re_features import (
    CANDIDATE_SETS,
    PairSentence,
    candidates_of,
    collate_pairs,
    pair_sentences,
    predicted_label_ids,
    relation_labels_of,
    sample_pairs,
    type_pairs_of,
)
from nere.train.registry import get_model_class

DEFAULT_NEG_RATIO = -1.0  # all negatives: stage 2 is cheap once a sentence is encoded


def entity_labels_of(examples: Sequence[Example]) -> list[str]:
    return sorted({e.label for ex in examples for e in ex.entities})


def re_config(train: Sequence[Example], side, dropout: float, head: dict[str, Any]) -> dict[str, Any]:
    """Label maps, candidate filter and text side: everything that rebuilds the model."""
    return {
        "relation_labels": relation_labels_of(train),
        "entity_labels": entity_labels_of(train),
        "type_pairs": [list(p) for p in type_pairs_of(train)],
        "encoder": side.encoder,
        "featurizer": side.featurizer,
        "dropout": dropout,
        "head": head,
    }


def build_re(kind: str, train: Sequence[Example], encoder: str = "auto", max_length: int = 256,
             dropout: float | None = None, head: dict[str, Any] | None = None,
             bert_size: dict[str, Any] | None = None, lstm: dict[str, Any] | None = None):
    """A fresh RE model of ``kind`` fitted to ``train``: (model, tokenizer, featurizer, notes)."""
    cls = get_model_class("re", kind)
    side = prepare_text_side(cls.encoder_type, [ex.text for ex in train], encoder, max_length, bert_size, lstm)
    if kind == "acnn":  # its encoder is the embedding lookup only (see models/re.py)
        s = side.encoder
        side.encoder = {"type": "embedding", "vocab_size": s["vocab_size"], "pad_id": s["pad_id"],
                        "embedding_dim": s["embedding_dim"], "dropout": s["dropout"]}
    if dropout is None:
        dropout = 0.1 if cls.encoder_type == "bert" else 0.3
    config = re_config(train, side, dropout, cls.fresh_head(dict(head or {})))
    if len(config["relation_labels"]) < 2:
        raise ValueError("the training data has no relations: nothing for an RE model to learn")
    model = cls(config, pretrained_path=side.pretrained_path)
    return model, side.tokenizer, featurizer_from(config, side.tokenizer), side.notes


def type_pairs(model) -> set[tuple[str, str]]:
    return {tuple(p) for p in model.config.get("type_pairs", [])}


def re_batches(model, featurizer, train: Sequence[Example], batch_size: int, neg_ratio: float = DEFAULT_NEG_RATIO):
    """A ``make_batches(rng)`` for the trainer: pairs resampled every epoch, sentences shuffled."""
    sents, stats = pair_sentences(train, featurizer, model.relation_labels, model.entity_labels,
                                  candidates=candidates_of(model))
    lengths = [len(s.encoded.ids) for s in sents]

    def make(rng: random.Random):
        chosen = [sample_pairs(s, neg_ratio, rng) for s in sents]
        keep = [i for i in range(len(sents)) if chosen[i]]
        batches = []
        for idx in length_batches([lengths[i] for i in keep], batch_size, rng):
            rows = [keep[j] for j in idx]
            batches.append(collate_pairs([sents[i] for i in rows], featurizer, [chosen[i] for i in rows]))
        return batches

    make.stats = stats.as_dict()  # type: ignore[attr-defined]
    return make


@torch.no_grad()
def classify_pairs(model, featurizer, sents: Sequence[PairSentence], batch_size: int = 64,
                   candidates: str = "all") -> list[list[tuple[str, float]]]:
    """(label, probability) per candidate pair of every sentence; lost pairs -> no_relation, 1.0.

    ``model`` is any two-stage model (forward_stage1 returns hidden, or (emissions, hidden)).
    """
    out: list[list[tuple[str, float]]] = [[(NO_RELATION, 1.0)] * len(s.pairs) for s in sents]
    todo = [i for i, s in enumerate(sents) if s.usable]
    lengths = [len(sents[i].encoded.ids) for i in todo]
    model.eval()
    dev = model.device
    for idx in length_batches(lengths, batch_size, rng=None):
        rows = [todo[j] for j in idx]
        b = collate_pairs([sents[i] for i in rows], featurizer)
        hidden = model.forward_stage1(b["input_ids"].to(dev), b["attention_mask"].to(dev))
        if isinstance(hidden, tuple):
            hidden = hidden[-1]
        logits = model.forward_stage2(hidden, *(b[k].to(dev) for k in ("pair_index", "head_mask", "tail_mask", "head_type", "tail_type")))
        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        best = predicted_label_ids(probs, candidates)
        for (r, p), k, pr in zip(b["pair_ref"], best, probs):
            out[rows[r]][p] = (model.relation_labels[int(k)], float(pr[k]))
    return out


def predict_re(model, featurizer, examples: Sequence[Example], entities: Sequence[Sequence[Entity]] | None = None,
               type_pairs: Collection[tuple[str, str]] | None = None, batch_size: int = 64,
               candidates: str | None = None) -> dict[str, Any]:
    """Predicted labels of every candidate pair; with ``entities``, pairs over those (end to end).

    ``candidates`` defaults to the model's set on gold entities and to ``all`` with
    ``entities`` (annotated pairs of predicted entities would leak the gold relations).

    Returns per example the pairs (head, tail, gold), predicted labels and scores, the
    predicted triples (no_relation dropped) and the featurization stats.
    """
    if candidates is None:
        candidates = candidates_of(model) if entities is None else "all"
    sents, stats = pair_sentences(examples, featurizer, model.relation_labels, model.entity_labels, entities, type_pairs,
                                  candidates)
    labels = classify_pairs(model, featurizer, sents, batch_size, candidates)
    triples = []
    for s, lab in zip(sents, labels):
        t = set()
        for (h, tl, _), (pred, _) in zip(s.pairs, lab):
            if pred != NO_RELATION:
                a, b = s.entities[h], s.entities[tl]
                t.add(((a.start, a.end, a.label), (b.start, b.end, b.label), pred))
        triples.append(t)
    return {"pairs": [s.pairs for s in sents], "labels": labels, "triples": triples, "stats": stats.as_dict()}


def pair_metrics(out: dict[str, Any]) -> dict[str, Any]:
    """core relation_scores over every candidate pair of ``predict_re``'s output."""
    gold = [g for pairs in out["pairs"] for *_, g in pairs]
    pred = [p for labels in out["labels"] for p, _ in labels]
    scores = relation_scores(gold, pred)
    scores["pairs"] = len(gold)
    scores["featurization"] = out["stats"]
    return scores


def evaluate_re(model, featurizer, examples: Sequence[Example], batch_size: int = 64) -> dict[str, Any]:
    """Accuracy, macro and micro P/R/F1 (no_relation excluded) on gold entities.

    ``precision``/``recall``/``f1`` repeat the macro figures, the NERE tables' convention.
    """
    scores = pair_metrics(predict_re(model, featurizer, examples, batch_size=batch_size))
    scores.update(precision=scores["macro_precision"], recall=scores["macro_recall"], f1=scores["macro_f1"])
    scores["sentences"] = len(examples)
    scores["candidates"] = candidates_of(model)
    return scores


@register_evaluator("re")
def _evaluate(model, featurizer, examples: Sequence[Example]) -> dict[str, Any]:
    return {"re": evaluate_re(model, featurizer, examples)}
