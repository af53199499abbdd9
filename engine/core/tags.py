"""Tag schemes (BIO, BIOES, BILOU, BMES) and the one span <-> tag conversion.

BILOU and BMES are BIOES with other letters (L=E, U=S; M=I), so every scheme is
handled by a single implementation over the canonical roles begin/inside/end/single.
Spans here are token spans ``(start, end_exclusive, label)``; character offsets are
the featurizer's job.

Decoding is lenient, the way conlleval reads predictions: an inside/end tag that does
not continue an open entity of the same type starts a new one, so a model's invalid
sequence still yields spans rather than being dropped. Gold tags are validated.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

TokenSpan = tuple[int, int, str]

# canonical roles
BEGIN, INSIDE, END, SINGLE, OUTSIDE = "B", "I", "E", "S", "O"

_LETTERS: dict[str, dict[str, str]] = {
    # scheme -> canonical role -> letter
    "BIO": {BEGIN: "B", INSIDE: "I"},
    "BIOES": {BEGIN: "B", INSIDE: "I", END: "E", SINGLE: "S"},
    "BILOU": {BEGIN: "B", INSIDE: "I", END: "L", SINGLE: "U"},
    "BMES": {BEGIN: "B", INSIDE: "M", END: "E", SINGLE: "S"},
}
SCHEMES: tuple[str, ...] = tuple(_LETTERS)


def _check_scheme(scheme: str) -> str:
    s = scheme.upper()
    if s not in _LETTERS:
        raise ValueError(f"unknown tag scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    return s


def _role_of(letter: str, scheme: str) -> str:
    for role, ch in _LETTERS[scheme].items():
        if ch == letter:
            return role
    raise ValueError(f"tag letter {letter!r} is not part of scheme {scheme}")


def split_tag(tag: str) -> tuple[str, str | None]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', None)."""
    if tag == "O":
        return OUTSIDE, None
    letter, sep, label = tag.partition("-")
    if not sep or not label or len(letter) != 1 or letter == OUTSIDE:
        raise ValueError(f"malformed tag {tag!r}: expected 'O' or '<letter>-<label>'")
    return letter, label


def spans_to_tags(spans: Iterable[TokenSpan], length: int, scheme: str = "BIOES") -> list[str]:
    """Encode non-overlapping token spans as tags. Overlaps raise ValueError."""
    scheme = _check_scheme(scheme)
    letters = _LETTERS[scheme]
    tags = ["O"] * length
    for start, end, label in sorted(spans):
        if not (0 <= start < end <= length):
            raise ValueError(f"span ({start}, {end}) outside a sequence of length {length}")
        if any(t != "O" for t in tags[start:end]):
            raise ValueError(f"span ({start}, {end}, {label}) overlaps another span")
        if end - start == 1:
            tags[start] = f"{letters.get(SINGLE, letters[BEGIN])}-{label}"
            continue
        tags[start] = f"{letters[BEGIN]}-{label}"
        for i in range(start + 1, end - 1):
            tags[i] = f"{letters[INSIDE]}-{label}"
        tags[end - 1] = f"{letters.get(END, letters[INSIDE])}-{label}"
    return tags


def tags_to_spans(tags: Sequence[str], scheme: str = "BIOES") -> list[TokenSpan]:
    """Decode tags into token spans (lenient, see module docstring)."""
    scheme = _check_scheme(scheme)
    items = []
    for i, tag in enumerate(tags):
        letter, label = split_tag(tag)
        if letter != OUTSIDE:
            items.append((i, _role_of(letter, scheme), label))
    return _decode_roles(items)


def _decode_roles(items: Iterable[tuple[int, str, str]]) -> list[TokenSpan]:
    """The one span decoder. ``items`` are (position, role, label) of the non-O positions
    in order; every position not listed is O. Visiting only those positions keeps the
    engine's decoding cost proportional to entity tokens, not to all tokens."""
    spans: list[TokenSpan] = []
    open_start, open_label, prev = -1, None, -2
    for i, role, label in items:
        if open_label is not None and i != prev + 1:  # an O in between closed it
            spans.append((open_start, prev + 1, open_label))
            open_label = None
        if role in (BEGIN, SINGLE) or label != open_label:
            if open_label is not None:
                spans.append((open_start, i, open_label))
            open_label = None
            if role == SINGLE:
                spans.append((i, i + 1, label))
            else:
                open_start, open_label = i, label
        if role == END and open_label is not None:
            spans.append((open_start, i + 1, open_label))
            open_label = None
        prev = i
    if open_label is not None:
        spans.append((open_start, prev + 1, open_label))
    return spans


@lru_cache(maxsize=64)
def _id_roles(scheme: str, labels: tuple[str, ...]) -> tuple[tuple[str, str | None], ...]:
    tags = TagSet(scheme, labels).tags
    return ((OUTSIDE, None),) + tuple((_role_of(split_tag(t)[0], scheme), split_tag(t)[1]) for t in tags[1:])


def convert_tags(tags: Sequence[str], source: str, target: str) -> list[str]:
    """Re-letter a valid tag sequence from one scheme into another."""
    return spans_to_tags(tags_to_spans(tags, source), len(tags), target)


@dataclass(frozen=True)
class TagSet:
    """The tag vocabulary of a model: scheme + entity labels -> ordered tag list.

    Tag 0 is always 'O'. The engine decodes ids with :meth:`ids_to_spans`, training
    encodes with :meth:`spans_to_ids`: one mapping for both.
    """

    scheme: str
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "scheme", _check_scheme(self.scheme))

    @property
    def tags(self) -> list[str]:
        letters = list(dict.fromkeys(_LETTERS[self.scheme].values()))
        return ["O"] + [f"{ch}-{lab}" for lab in self.labels for ch in letters]

    @property
    def tag_to_id(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tags)}

    def spans_to_ids(self, spans: Iterable[TokenSpan], length: int) -> list[int]:
        index = self.tag_to_id
        return [index[t] for t in spans_to_tags(spans, length, self.scheme)]

    def ids_to_spans(self, ids: Sequence[int]) -> list[TokenSpan]:
        ids = np.asarray(ids, dtype=np.int64)
        roles = _id_roles(self.scheme, tuple(self.labels))
        where = np.flatnonzero(ids)  # O is id 0: only entity positions are visited
        values = ids[where].tolist()
        if values and (min(values) < 0 or max(values) >= len(roles)):
            raise IndexError(f"tag id outside 0..{len(roles) - 1}")
        return _decode_roles((i, *roles[v]) for i, v in zip(where.tolist(), values))  # type: ignore[misc]
