"""Tag schemes (BIO, BIOES, BILOU, BMES) and the one span <-> tag conversion.

BILOU and BMES are BIOES with other letters (L=E, U=S; M=I), so every scheme is
handled by a single implementation over the canonical roles begin/inside/end/single.
Spans here are token spans ``(start, end_exclusive, label)``; character offsets are
the featurizer's job.

Decoding is lenient, the way conlleval reads predictions: an inside/end tag that does
not continue an open entity of the same type starts a new one, so a model's invalid
sequence still yields spans rather than being dropped. Gold tags are validated. The one
decoder (:func:`_spans_of_roles`) works on a whole (rows, positions) grid with array
operations, so the engine decodes a batch without a Python loop per sentence.
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
    codes = np.zeros((1, len(tags)), dtype=np.int8)
    label_ids = np.zeros((1, len(tags)), dtype=np.int64)
    labels: dict[str, int] = {}
    for i, tag in enumerate(tags):
        letter, label = split_tag(tag)
        if letter != OUTSIDE:
            codes[0, i] = _ROLE_CODE[_role_of(letter, scheme)]
            label_ids[0, i] = labels.setdefault(label, len(labels))  # type: ignore[arg-type]
    names = list(labels)
    _, starts, ends, lab = _spans_of_roles(codes, label_ids)
    return [(s, e, names[k]) for s, e, k in zip(starts.tolist(), ends.tolist(), lab.tolist())]


_ROLE_CODE = {OUTSIDE: 0, BEGIN: 1, INSIDE: 2, END: 3, SINGLE: 4}


def _spans_of_roles(codes: np.ndarray, label_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The one span decoder, over a (rows, positions) grid of role codes (0 = O, see
    ``_ROLE_CODE``) and label indices. Position t continues the entity at t - 1 when both
    are entity positions, t is inside/end, the labels match and t - 1 left its entity open
    (begin/inside); every other entity position starts an entity, and a position ends its
    entity unless t + 1 continues it. Returns (row, start, end exclusive, label index) of
    every span, in row and position order."""
    codes = np.asarray(codes)
    label_ids = np.asarray(label_ids)
    ent = codes != 0
    cont = np.zeros(codes.shape, dtype=bool)
    if codes.shape[1] > 1:
        here, before = codes[:, 1:], codes[:, :-1]
        cont[:, 1:] = (((here == 2) | (here == 3)) & ((before == 1) | (before == 2))
                       & (label_ids[:, 1:] == label_ids[:, :-1]))
    ends_here = ent.copy()
    ends_here[:, :-1] &= ~cont[:, 1:]
    rows, starts = np.nonzero(ent & ~cont)
    _, ends = np.nonzero(ends_here)
    return rows, starts, ends + 1, label_ids[rows, starts]


@lru_cache(maxsize=64)
def _id_codes(scheme: str, labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per tag id: role code and label index (tag 0 is O)."""
    tags = TagSet(scheme, labels).tags
    index = {lab: k for k, lab in enumerate(labels)}
    codes, label_ids = [0], [0]
    for t in tags[1:]:
        letter, label = split_tag(t)
        codes.append(_ROLE_CODE[_role_of(letter, scheme)])
        label_ids.append(index[label])
    return np.asarray(codes, dtype=np.int8), np.asarray(label_ids, dtype=np.int64)


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
        ids = np.asarray(ids, dtype=np.int64).reshape(1, -1)
        rows, starts, ends, labels = self.batch_spans(ids, np.array([ids.shape[1]]))
        return [(s, e, lab) for s, e, lab in zip(starts.tolist(), ends.tolist(), labels)]

    def batch_spans(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """Spans of every row of a (rows, T) tag-id grid; positions at or beyond a row's
        length count as O. Returns (row, start, end exclusive, label) in row order."""
        ids = np.asarray(ids, dtype=np.int64)
        codes, label_ids = _id_codes(self.scheme, tuple(self.labels))
        if ids.size and (ids.min() < 0 or ids.max() >= len(codes)):
            raise IndexError(f"tag id outside 0..{len(codes) - 1}")
        ids = np.where(np.arange(ids.shape[1])[None, :] < np.asarray(lengths)[:, None], ids, 0)
        rows, starts, ends, lab = _spans_of_roles(codes[ids], label_ids[ids])
        return rows, starts, ends, [self.labels[k] for k in lab.tolist()]
