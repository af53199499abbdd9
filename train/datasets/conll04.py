"""CoNLL04 (Roth & Yih 2004, SpERT's 922/231/288 split) from TablERT-CNN's BILOU JSON.

Text is the tokens joined by single spaces (the files carry no offsets); entities are
decoded from BILOU tags with the core's tags_to_spans and mapped to characters through
the token offsets. Entities are numbered in start order, which is how the files'
relation ``head``/``tail`` indices count them.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from nere.engine.core import Entity, Example, Relation
from nere.engine.core.featurize import token_to_char_spans
from nere.engine.core.tags import spans_to_tags, tags_to_spans
from nere.train.datasets.base import (
    DatasetFormatError,
    DatasetNotFoundError,
    LoadStats,
    check_split,
    copy_examples,
    dataset_root,
)

NAME = "conll04"


def token_offsets(tokens: list[str]) -> np.ndarray:
    """(n, 2) character offsets of ``tokens`` in ``" ".join(tokens)``."""
    out = np.zeros((len(tokens), 2), dtype=np.int64)
    pos = 0
    for i, tok in enumerate(tokens):
        out[i] = (pos, pos + len(tok))
        pos += len(tok) + 1
    return out


def convert(record: dict, rid: str, stats: LoadStats) -> Example:
    """One TablERT-CNN record -> Example."""
    tokens, tags = record["tokens"], record["tags"]
    if len(tokens) != len(tags):
        raise DatasetFormatError(f"{rid}: {len(tokens)} tokens but {len(tags)} tags")
    spans = sorted(tags_to_spans(tags, scheme="BILOU"))
    if spans_to_tags(spans, len(tags), "BILOU") != list(tags):
        stats.add("invalid_tag_sequences")  # decoded leniently; counted, never silent
    chars = token_to_char_spans(token_offsets(tokens), spans)
    entities = [Entity(s, e, label) for s, e, label in chars]
    relations = [Relation(int(r["head"]), int(r["tail"]), r["type"]) for r in record["relations"]]
    ex = Example(" ".join(tokens), entities, relations, id=rid)
    try:
        ex.validate()
    except ValueError as err:
        raise DatasetFormatError(f"{rid}: {err}") from None
    stats.add("sentences")
    stats.add("entities", len(entities))
    stats.add("relations", len(relations))
    return ex


@lru_cache(maxsize=8)
def _parse(path: str, split: str) -> tuple[tuple[Example, ...], LoadStats]:
    stats = LoadStats(NAME, split)
    with open(path, encoding="utf-8") as f:
        records = json.load(f)
    examples = tuple(
        convert(rec, f"{NAME}/{split}/{rec.get('orig_id', i)}", stats) for i, rec in enumerate(records)
    )
    return examples, stats


def _path(split: str, data_dir: str | None) -> Path:
    path = dataset_root(NAME, data_dir) / f"conll04_{check_split(split)}.json"
    if not path.is_file():
        raise DatasetNotFoundError(f"dataset {NAME!r}: file {path} not found")
    return path


def load(split: str, limit: int | None = None, data_dir: str | None = None) -> list[Example]:
    """CoNLL04 sentences of ``split`` (train/dev/test)."""
    examples, _ = _parse(str(_path(split, data_dir)), split)
    return copy_examples(examples, limit)


def stats(split: str, data_dir: str | None = None) -> LoadStats:
    """Counts of the full split (parsing it if needed)."""
    return _parse(str(_path(split, data_dir)), split)[1]
