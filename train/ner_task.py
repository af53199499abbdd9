"""NER end to end: build a kind for a dataset, train it, predict and evaluate."""
from __future__ import annotations

import random
from typing import Any, Sequence

import numpy as np
import torch

from nere.engine.core.decode import decode_tags, kept_decoder, row_char_spans
from nere.engine.core.featurize import Featurizer
from nere.engine.core.metrics import entity_scores, token_accuracy
from nere.engine.core.types import Example
from nere.train.checkpoint import featurizer_from
from nere.train.features import build_token_features, collate_ner, length_batches, ner_items
from nere.train.prepare import prepare_text_side
from nere.train.registry import get_model_class

DEFAULT_SCHEME = "BIOES"


def entity_labels(examples: Sequence[Example]) -> list[str]:
    return sorted({e.label for ex in examples for e in ex.entities})


def build_ner(kind: str, train: Sequence[Example], encoder: str = "auto", max_length: int = 256,
              tag_scheme: str = DEFAULT_SCHEME, dropout: float | None = None,
              bert_size: dict[str, Any] | None = None, lstm: dict[str, Any] | None = None,
              vocab_min_freq: int | None = None, features: dict[str, Any] | None = None):
    """A fresh model of ``kind`` with a tokenizer fitted to ``train``: (model, tokenizer, featurizer, notes).

    ``features`` asks for extra per-token inputs (keys of train.features.FEATURE_DEFAULTS:
    case classes, bigrams, a lexicon); their data is fitted to ``train`` as well."""
    cls = get_model_class("ner", kind)
    texts = [ex.text for ex in train]
    side = prepare_text_side(cls.encoder_type, texts, encoder, max_length, bert_size, lstm, vocab_min_freq)
    token_features, features_config, feature_notes = build_token_features(
        texts, featurizer_from({"featurizer": side.featurizer}, side.tokenizer), features)
    config = {
        "tag_scheme": tag_scheme,
        "entity_labels": entity_labels(train),
        "encoder": side.encoder,
        "featurizer": side.featurizer,
        "dropout": dropout if dropout is not None else (0.1 if cls.encoder_type == "bert" else 0.3),
    }
    if features_config:
        config["features"] = features_config
    model = cls(config, pretrained_path=side.pretrained_path)
    model.input_features = token_features if features_config else None
    notes = dict(side.notes, **({"features": feature_notes} if feature_notes else {}))
    return model, side.tokenizer, featurizer_from(config, side.tokenizer), notes


def predict_ner(model, featurizer: Featurizer, examples: Sequence[Example], batch_size: int = 64) -> dict[str, Any]:
    """Predicted char spans per example, plus gold/pred tag ids for token accuracy."""
    items, stats = ner_items(examples, featurizer, model.tagset, model.input_features)
    crf = kept_decoder(model.crf_arrays())
    preds: list[list] = [[] for _ in items]
    gold_tags: list[list[int]] = [[] for _ in items]
    pred_tags: list[list[int]] = [[] for _ in items]
    lengths = [len(it.tags) for it in items]
    model.eval()
    with torch.no_grad():
        for idx in length_batches(lengths, batch_size, rng=None):
            batch = collate_ner([items[i] for i in idx], featurizer)
            extras = (t.to(model.device) for t in model.extra_inputs(batch))
            emissions = model(batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device), *extras)
            em = emissions.float().cpu().numpy()
            b = batch["batch"]
            tag_ids = decode_tags(em, b.lengths, crf)
            for row, i in enumerate(idx):
                n = len(items[i].tags)
                preds[i] = row_char_spans(model.tagset, tag_ids[row], b.offsets[row], featurizer.lead, n,
                                          examples[i].text)
                gold_tags[i] = items[i].tags.tolist()
                pred_tags[i] = tag_ids[row, featurizer.lead : featurizer.lead + n].tolist()
    return {"spans": preds, "gold_spans": [it.gold for it in items], "gold_tags": gold_tags,
            "pred_tags": pred_tags, "stats": stats.as_dict()}


def evaluate_ner(model, featurizer: Featurizer, examples: Sequence[Example], batch_size: int = 64) -> dict[str, Any]:
    """Token accuracy and strict entity P/R/F1 against the flat gold entities."""
    out = predict_ner(model, featurizer, examples, batch_size)
    scores = entity_scores(out["gold_spans"], out["spans"])
    scores["accuracy"] = token_accuracy(out["gold_tags"], out["pred_tags"])
    scores["sentences"] = len(examples)
    scores["featurization"] = out["stats"]
    return scores


def ner_batches(model, featurizer: Featurizer, train: Sequence[Example], batch_size: int):
    """A ``make_batches(rng)`` for the trainer: tokenized once, re-batched every epoch."""
    items, stats = ner_items(train, featurizer, model.tagset, model.input_features)
    lengths = [len(it.tags) for it in items]

    def make(rng: random.Random):
        return [collate_ner([items[i] for i in idx], featurizer) for idx in length_batches(lengths, batch_size, rng)]

    make.stats = stats.as_dict()  # type: ignore[attr-defined]
    return make
