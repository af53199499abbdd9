"""Examples -> model inputs for training, on top of the engine's shared featurizer."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from nere.engine.core.featurize import Encoded, Featurizer, char_to_token_spans
from nere.engine.core.features import BigramVocab, FlatText, Lexicon, TokenFeatures, jieba_dict_path, scatter_rows
from nere.engine.core.tags import TagSet
from nere.engine.core.types import Example
from nere.train.datasets.policy import flat_entities


@dataclass
class FeatureStats:
    """What featurization had to change, so reports can say it."""

    sentences: int = 0
    truncated: int = 0
    nested_dropped: int = 0
    misaligned: int = 0
    lost_to_truncation: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class NerItem:
    encoded: Encoded
    tags: np.ndarray  # (n_content,) tag ids
    gold: list[tuple[int, int, str]] = field(default_factory=list)  # char spans (flat)
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # extra inputs, one row per content token


def ner_items(examples: Sequence[Example], featurizer: Featurizer, tagset: TagSet,
              features: TokenFeatures | None = None) -> tuple[list[NerItem], FeatureStats]:
    """Tokenize, truncate to the model length and tag every content sub-word; with
    ``features``, also the extra inputs (computed on the whole text, then cut alike)."""
    stats = FeatureStats(sentences=len(examples))
    texts = [ex.text for ex in examples]
    tokens = featurizer.tokenize_flat(texts)
    flat_extras = features.compute(texts, tokens.offsets, tokens.first) if features else {}
    items = []
    for k, ex in enumerate(examples):
        enc, cut = featurizer.truncate(tokens.encoded(k))
        a = int(tokens.first[k])
        extras = {name: v[a : a + len(enc.ids)] for name, v in flat_extras.items()}
        stats.truncated += int(cut)
        flat, dropped = flat_entities(ex.entities)
        stats.nested_dropped += dropped
        spans = [(e.start, e.end, e.label) for e in flat]
        token_spans, bad = char_to_token_spans(enc.offsets, spans) if len(enc.ids) else ([], len(spans))
        stats.misaligned += bad
        stats.lost_to_truncation += len(spans) - len(token_spans) if cut else 0
        tags = np.asarray(tagset.spans_to_ids(token_spans, len(enc.ids)), dtype=np.int64)
        items.append(NerItem(enc, tags, spans, extras))
    return items, stats


def collate_ner(items: Sequence[NerItem], featurizer: Featurizer) -> dict[str, Any]:
    """Padded tensors; tags are -100 on padding and 0 ('O') on special tokens."""
    batch = featurizer.collate([it.encoded for it in items])
    tags = np.full(batch.input_ids.shape, -100, dtype=np.int64)
    lead = featurizer.lead
    for i, it in enumerate(items):
        tags[i, : batch.lengths[i]] = 0
        tags[i, lead : lead + len(it.tags)] = it.tags
    out = {
        "input_ids": torch.from_numpy(batch.input_ids),
        "attention_mask": torch.from_numpy(batch.attention_mask),
        "tags": torch.from_numpy(tags),
        "batch": batch,
    }
    out.update(collate_extras(items, featurizer.lead, batch.input_ids.shape[1]))
    return out


def collate_extras(items: Sequence[NerItem], lead: int, width: int) -> dict[str, torch.Tensor]:
    """The items' extra inputs padded like input_ids (0 at specials and padding)."""
    if not items or not items[0].extras:
        return {}
    counts = np.fromiter((len(it.encoded.ids) for it in items), dtype=np.int64, count=len(items))
    starts = np.cumsum(counts) - counts
    return {name: torch.from_numpy(scatter_rows(np.concatenate([it.extras[name] for it in items]), starts, counts,
                                                lead, width))
            for name in items[0].extras}


# ---------------------------------------------------------------------------- feature data for a new model

FEATURE_DEFAULTS: dict[str, Any] = {
    "case": False, "case_dim": 16,
    "bigrams": False, "bigram_min_freq": 1, "bigram_dim": 64,
    "lexicon": None, "lexicon_k": 3, "lexicon_dim": 50, "lexicon_max_len": 10, "lexicon_min_count": 1,
}


def build_token_features(texts: Sequence[str], featurizer: Featurizer, options: dict[str, Any] | None
                         ) -> tuple[TokenFeatures, dict[str, Any] | None, dict[str, Any]]:
    """The extra inputs ``options`` ask for (keys of :data:`FEATURE_DEFAULTS`), with their
    data fitted to the training texts: (features, config entry or None, notes).

    The bigram vocabulary holds the training bigrams seen ``bigram_min_freq`` times; the
    lexicon (``"jieba"`` or a ``word freq`` file) keeps only the words found in the
    training texts (``lexicon_min_count`` times), since the others would have untrained
    embeddings."""
    opts = dict(FEATURE_DEFAULTS, **(options or {}))
    if not (opts["case"] or opts["bigrams"] or opts["lexicon"]):
        return TokenFeatures(), None, {}
    tokens = featurizer.tokenize_flat(list(texts))
    notes: dict[str, Any] = {}
    bigrams = lexicon = None
    if opts["bigrams"]:
        bigrams = BigramVocab.build(texts, tokens.offsets, tokens.first, min_freq=int(opts["bigram_min_freq"]))
        notes["bigram_vocab"] = len(bigrams)
    if opts["lexicon"]:
        source = jieba_dict_path() if opts["lexicon"] == "jieba" else opts["lexicon"]
        full = Lexicon.from_dict_file(source, max_len=int(opts["lexicon_max_len"]))
        _, _, found = full.matches(FlatText.of(list(texts)), tokens.offsets, tokens.first)
        keep = np.bincount(found, minlength=len(full.codes)) >= int(opts["lexicon_min_count"])
        lexicon = full.subset(keep)
        notes["lexicon_words"] = {"source": len(full.codes), "kept": len(lexicon.codes)}
    feats = TokenFeatures(case=bool(opts["case"]), bigrams=bigrams, lexicon=lexicon, lexicon_k=int(opts["lexicon_k"]))
    config = feats.config()
    if config["case"]:
        config["case_dim"] = int(opts["case_dim"])
    if config["bigrams"]:
        config["bigrams"].update(dim=int(opts["bigram_dim"]), min_freq=int(opts["bigram_min_freq"]))
    if config["lexicon"]:
        config["lexicon"].update(dim=int(opts["lexicon_dim"]), max_len=int(opts["lexicon_max_len"]),
                                 min_count=int(opts["lexicon_min_count"]),
                                 source="jieba" if opts["lexicon"] == "jieba" else str(opts["lexicon"]).rsplit("/", 1)[-1])
    return feats, config, notes


def length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random | None, pool: int = 50) -> Iterator[list[int]]:
    """Index batches of similar length (less padding); shuffled when ``rng`` is given."""
    order = list(range(len(lengths)))
    if rng is not None:
        rng.shuffle(order)
    batches = []
    step = batch_size * pool
    for k in range(0, len(order), step):
        chunk = sorted(order[k : k + step], key=lambda i: lengths[i])
        batches.extend(chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size))
    if rng is not None:
        rng.shuffle(batches)
    yield from batches
