"""CoNLL04 (Roth & Yih 2004, SpERT's 922/231/288 split) from TablERT-CNN's BILOU JSON.

Two text forms of the same sentences (the files carry tokens, no offsets):

- ``form="tokens"`` (dataset ``conll04``): the tokens joined by single spaces, as published.
- ``form="prose"`` (dataset ``conll04-prose``): the tokens laid out as running text
  (:func:`prose_offsets`), the way the engine meets English: no space before
  ``, . ; : ? ! ) ] } %`` or a clitic (``'s n't 're``), none after ``( [ {``, and quote
  pairs written closed up (``` `` `` ``...``'' '' ``, ``"..."``, `` ` ``...``'``), and
  digit groups joined (``150 , 000`` -> ``150,000``).

Either way entities are decoded from BILOU tags with the core's tags_to_spans and mapped
to characters through the token offsets, so a gold span runs from its first token's
first character to its last token's last one. Entities are numbered in start order,
which is how the files' relation ``head``/``tail`` indices count them.
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
FORMS = ("tokens", "prose")
_NO_SPACE_BEFORE = frozenset(",.;:?!)]}%") | {"''", "n't"}
_NO_SPACE_AFTER = frozenset("([{$") | {"``"}
_CLITICS = frozenset("'s 's 't 're 've 'll 'd 'm 'th".split())


def token_offsets(tokens: list[str]) -> np.ndarray:
    """(n, 2) character offsets of ``tokens`` in ``" ".join(tokens)``."""
    out = np.zeros((len(tokens), 2), dtype=np.int64)
    pos = 0
    for i, tok in enumerate(tokens):
        out[i] = (pos, pos + len(tok))
        pos += len(tok) + 1
    return out


def prose_offsets(tokens: list[str]) -> tuple[str, np.ndarray]:
    """``tokens`` laid out as running text: (text, (n, 2) offsets of each token in it).

    A token is glued to the one before it when it closes (punctuation, a closing
    bracket, a clitic, a closing quote) or when the one before opens (an opening
    bracket or quote). Quotes: a run of ` opens and a run of ' closes (the files split
    ``` `` ``` and ``''`` into single characters; a lone ' after a word, as in
    ``Jones '``, closes onto it); '"' alternates between opening and closing, starting
    open. Tokens are never changed, only the spaces between them."""
    glue = [False] * len(tokens)  # glue[i]: no space between tokens i-1 and i
    double_open = False
    for i, tok in enumerate(tokens):
        if i == 0:
            if tok == '"':
                double_open = True
            continue
        prev = tokens[i - 1]
        if tok == '"':
            glue[i] = double_open  # a closing '"' goes onto the word before it
            double_open = not double_open
        elif tok == "`":
            glue[i] = prev == "`"
        elif tok == "'":
            glue[i] = True
        elif tok.isdigit() and len(tok) == 3 and prev == "," and i > 1 and tokens[i - 2][-1:].isdigit():
            glue[i] = True  # a thousands separator the files split off: "150 , 000" -> "150,000"
        else:
            glue[i] = tok in _NO_SPACE_BEFORE or tok.lower() in _CLITICS
        if prev in _NO_SPACE_AFTER or prev == "`" or (prev == '"' and double_open):
            glue[i] = True
    out = np.zeros((len(tokens), 2), dtype=np.int64)
    parts: list[str] = []
    pos = 0
    for i, tok in enumerate(tokens):
        if i and not glue[i]:
            parts.append(" ")
            pos += 1
        out[i] = (pos, pos + len(tok))
        parts.append(tok)
        pos += len(tok)
    return "".join(parts), out


def convert(record: dict, rid: str, stats: LoadStats, form: str = "tokens") -> Example:
    """One TablERT-CNN record -> Example, its text in ``form`` ("tokens" or "prose")."""
    tokens, tags = record["tokens"], record["tags"]
    if len(tokens) != len(tags):
        raise DatasetFormatError(f"{rid}: {len(tokens)} tokens but {len(tags)} tags")
    spans = sorted(tags_to_spans(tags, scheme="BILOU"))
    if spans_to_tags(spans, len(tags), "BILOU") != list(tags):
        stats.add("invalid_tag_sequences")  # decoded leniently; counted, never silent
    if form == "prose":
        text, offsets = prose_offsets(tokens)
    else:
        text, offsets = " ".join(tokens), token_offsets(tokens)
    chars = token_to_char_spans(offsets, spans)
    entities = [Entity(s, e, label) for s, e, label in chars]
    relations = [Relation(int(r["head"]), int(r["tail"]), r["type"]) for r in record["relations"]]
    ex = Example(text, entities, relations, id=rid)
    try:
        ex.validate()
    except ValueError as err:
        raise DatasetFormatError(f"{rid}: {err}") from None
    stats.add("sentences")
    stats.add("entities", len(entities))
    stats.add("relations", len(relations))
    return ex


def _check_form(form: str) -> str:
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    return form


@lru_cache(maxsize=8)
def _parse(path: str, split: str, form: str = "tokens") -> tuple[tuple[Example, ...], LoadStats]:
    stats = LoadStats(NAME if form == "tokens" else f"{NAME}-{form}", split)
    with open(path, encoding="utf-8") as f:
        records = json.load(f)
    examples = tuple(
        convert(rec, f"{NAME}/{split}/{rec.get('orig_id', i)}", stats, form) for i, rec in enumerate(records)
    )
    return examples, stats


def _path(split: str, data_dir: str | None) -> Path:
    path = dataset_root(NAME, data_dir) / f"conll04_{check_split(split)}.json"
    if not path.is_file():
        raise DatasetNotFoundError(f"dataset {NAME!r}: file {path} not found")
    return path


def load(split: str, limit: int | None = None, data_dir: str | None = None, form: str = "tokens") -> list[Example]:
    """CoNLL04 sentences of ``split`` (train/dev/test), text in ``form`` ("tokens" or "prose")."""
    examples, _ = _parse(str(_path(split, data_dir)), split, _check_form(form))
    return copy_examples(examples, limit)


def stats(split: str, data_dir: str | None = None, form: str = "tokens") -> LoadStats:
    """Counts of the full split (parsing it if needed)."""
    return _parse(str(_path(split, data_dir)), split, _check_form(form))[1]


class Form:
    """The loader interface (``load``, ``stats``) of one text form, for the dataset registry."""

    def __init__(self, form: str) -> None:
        self.form = _check_form(form)

    def load(self, split: str, limit: int | None = None, data_dir: str | None = None) -> list[Example]:
        return load(split, limit, data_dir, form=self.form)

    def stats(self, split: str, data_dir: str | None = None) -> LoadStats:
        return stats(split, data_dir, form=self.form)


prose = Form("prose")
