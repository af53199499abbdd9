"""Joint NER + RE end to end: build, batches, predict, evaluate (`nere train joint` is in the CLI).

Training feeds the RE head the gold entity pairs (negatives sampled as for RE). Evaluation
reports three things: NER (strict entity P/R/F1, via ner_task.predict_ner and the core
decoder), RE on gold entities (core relation_scores), and end to end: pairs built from
the *predicted* entities, filtered by the training type pairs as the engine does, scored
as strict triples (core triple_scores). Model selection: end-to-end triple F1 on dev.
"""
from __future__ import annotations

import random
from typing import Any, Sequence

from nere.engine.core.metrics import entity_scores, token_accuracy, triple_scores
from nere.engine.core.types import Entity, Example
from nere.train.checkpoint import featurizer_from
from nere.train.evaluators import register_evaluator
from nere.train.features import build_token_features, collate_ner, length_batches, ner_items
from nere.train.ner_task import DEFAULT_SCHEME, predict_ner
from nere.train.prepare import prepare_text_side
from nere.train.re_features import collate_pairs, pair_sentences, sample_pairs
from nere.train.re_task import DEFAULT_NEG_RATIO, pair_metrics, predict_re, re_config, type_pairs
from nere.train.registry import get_model_class

KIND = "bert-crf-multitask"


def build_joint(train: Sequence[Example], encoder: str = "auto", max_length: int = 256,
                tag_scheme: str = DEFAULT_SCHEME, dropout: float | None = None, head: dict[str, Any] | None = None,
                weights: dict[str, float] | None = None, learned_weights: bool = False,
                bert_size: dict[str, Any] | None = None, case_features: bool = False):
    """A fresh joint model fitted to ``train``: (model, tokenizer, featurizer, notes).

    ``case_features`` adds a letter-case class per token beside the encoder output, for the
    tagger only (an uncased encoder cannot tell "Bush" from "bush")."""
    cls = get_model_class("joint", KIND)
    texts = [ex.text for ex in train]
    side = prepare_text_side("bert", texts, encoder, max_length, bert_size)
    config = re_config(train, side, 0.1 if dropout is None else dropout, dict(head or {}))
    config.update(tag_scheme=tag_scheme, weights=dict(weights or {}), learned_weights=learned_weights)
    token_features, features_config, _ = build_token_features(
        texts, featurizer_from(config, side.tokenizer), {"case": True} if case_features else None)
    if features_config:
        config["features"] = features_config
    model = cls(config, pretrained_path=side.pretrained_path)
    model.input_features = token_features if features_config else None
    return model, side.tokenizer, featurizer_from(config, side.tokenizer), side.notes


def joint_batches(model, featurizer, train: Sequence[Example], batch_size: int, neg_ratio: float = DEFAULT_NEG_RATIO):
    """A ``make_batches(rng)``: every sentence (tags for NER) with its sampled gold-entity pairs."""
    items, ner_stats = ner_items(train, featurizer, model.tagset, model.input_features)
    sents, pair_stats = pair_sentences(train, featurizer, model.relation_labels, model.entity_labels)
    lengths = [len(it.tags) for it in items]

    def make(rng: random.Random):
        chosen = [sample_pairs(s, neg_ratio, rng) for s in sents]
        out = []
        for idx in length_batches(lengths, batch_size, rng):
            batch = collate_ner([items[i] for i in idx], featurizer)
            pairs = collate_pairs([sents[i] for i in idx], featurizer, [chosen[i] for i in idx])
            batch.update({k: v for k, v in pairs.items() if k not in batch})
            out.append(batch)
        return out

    make.stats = {"ner": ner_stats.as_dict(), "pairs": pair_stats.as_dict()}  # type: ignore[attr-defined]
    return make


def evaluate_joint(model, featurizer, examples: Sequence[Example], batch_size: int = 64) -> dict[str, Any]:
    """{"ner", "re" (gold entities), "e2e" (predicted entities), "e2e_f1", "weights"}."""
    ner_out = predict_ner(model, featurizer, examples, batch_size)
    ner = entity_scores(ner_out["gold_spans"], ner_out["spans"])
    ner["accuracy"] = token_accuracy(ner_out["gold_tags"], ner_out["pred_tags"])
    ner["featurization"] = ner_out["stats"]
    re = pair_metrics(predict_re(model, featurizer, examples, batch_size=batch_size))
    re.update(precision=re["macro_precision"], recall=re["macro_recall"], f1=re["macro_f1"])
    predicted = [[Entity(s, e, lab) for s, e, lab in spans] for spans in ner_out["spans"]]
    e2e_out = predict_re(model, featurizer, examples, entities=predicted, type_pairs=type_pairs(model), batch_size=batch_size)
    e2e = triple_scores([ex.triples() for ex in examples], e2e_out["triples"])
    e2e["candidate_pairs"] = e2e_out["stats"]["pairs"]
    return {"ner": ner, "re": re, "e2e": e2e, "e2e_f1": e2e["f1"], "weights": model.task_weights(),
            "sentences": len(examples)}


@register_evaluator("joint")
def _evaluate(model, featurizer, examples: Sequence[Example]) -> dict[str, Any]:
    out = evaluate_joint(model, featurizer, examples)
    return {"ner": out["ner"], "re": out["re"], "e2e": out["e2e"], "weights": out["weights"]}


def weights_label(weights: dict[str, Any]) -> str:
    """How the NERE tables name a weighting: 'ner + 5*re + 0.5*transe' or 'learned'."""
    if weights.get("learned"):
        return "learned"
    terms = []
    for k in ("ner", "re", "transe"):
        w = float(weights.get(k, 0.0))
        if w:
            terms.append(f"{k}" if w == 1 else f"{w:g}*{k}")
    return " + ".join(terms) or "0"
