"""Examples -> model inputs for training, on top of the engine's shared featurizer."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from nere.engine.core.featurize import Encoded, Featurizer, char_to_token_spans
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


def ner_items(examples: Sequence[Example], featurizer: Featurizer, tagset: TagSet) -> tuple[list[NerItem], FeatureStats]:
    """Tokenize, truncate to the model length and tag every content sub-word."""
    stats = FeatureStats(sentences=len(examples))
    encoded = featurizer.tokenize([ex.text for ex in examples])
    items = []
    for ex, enc in zip(examples, encoded):
        enc, cut = featurizer.truncate(enc)
        stats.truncated += int(cut)
        flat, dropped = flat_entities(ex.entities)
        stats.nested_dropped += dropped
        spans = [(e.start, e.end, e.label) for e in flat]
        token_spans, bad = char_to_token_spans(enc.offsets, spans) if len(enc.ids) else ([], len(spans))
        stats.misaligned += bad
        stats.lost_to_truncation += len(spans) - len(token_spans) if cut else 0
        tags = np.asarray(tagset.spans_to_ids(token_spans, len(enc.ids)), dtype=np.int64)
        items.append(NerItem(enc, tags, spans))
    return items, stats


def collate_ner(items: Sequence[NerItem], featurizer: Featurizer) -> dict[str, Any]:
    """Padded tensors; tags are -100 on padding and 0 ('O') on special tokens."""
    batch = featurizer.collate([it.encoded for it in items])
    tags = np.full(batch.input_ids.shape, -100, dtype=np.int64)
    lead = featurizer.lead
    for i, it in enumerate(items):
        tags[i, : batch.lengths[i]] = 0
        tags[i, lead : lead + len(it.tags)] = it.tags
    return {
        "input_ids": torch.from_numpy(batch.input_ids),
        "attention_mask": torch.from_numpy(batch.attention_mask),
        "tags": torch.from_numpy(tags),
        "batch": batch,
    }


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
