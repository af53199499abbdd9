"""Character vocabularies tokenized with array operations.

A character tokenizer (train/vocab.py) is a BPE model without merges behind a whitespace
split: every non-whitespace character becomes its own token (its id, or [UNK]) with the
offsets (i, i + 1). ``tokenizers`` does this correctly but pays per character for Python
lists of ids and offsets (measured: ~0.1 core-seconds per 500 MSRA documents, half of the
engine's own work beside a BiLSTM). :class:`CharTable` computes the same tokens from the
text's code points with a lookup table, for exactly that tokenizer form and nothing else
(``from_tokenizer`` returns None for any other), and tests compare it with ``tokenizers``
over every code point. The tokenizer file stays the one definition of the vocabulary.
"""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer

# Unicode White_Space (Rust's char::is_whitespace, which WhitespaceSplit splits on); a
# stable Unicode property. Python's str.isspace differs (it adds U+001C..U+001F).
WHITE_SPACE = np.array(
    [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000],
    dtype=np.uint32,
)
_BMP = 0x10000
_DROP = -1  # table value of a whitespace character: no token


class CharTable:
    """Code point -> token id for a merge-less BPE character vocabulary."""

    def __init__(self, vocab: dict[str, int], unk_id: int) -> None:
        self.unk_id = int(unk_id)
        bmp = np.full(_BMP, self.unk_id, dtype=np.int64)
        astral: dict[int, int] = {}
        for token, tid in vocab.items():
            if len(token) == 1:  # longer entries ([PAD], [CLS], ...) are never produced without merges
                cp = ord(token)
                if cp < _BMP:
                    bmp[cp] = tid
                else:
                    astral[cp] = tid
        bmp[WHITE_SPACE] = _DROP
        self._bmp = bmp
        self._astral = astral

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> "CharTable | None":
        """The table for a tokenizer of exactly the character form, else None.

        Anything that could make ``tokenizers`` produce other tokens disqualifies it: a
        normalizer, another pre-tokenizer, merges, dropout, prefixes/suffixes, byte
        fallback, fused unknowns, added tokens (matched in the raw text), no [UNK].
        """
        spec = json.loads(tokenizer.to_str())
        model = spec.get("model") or {}
        if spec.get("normalizer") is not None or spec.get("pre_tokenizer") != {"type": "WhitespaceSplit"}:
            return None
        if spec.get("added_tokens"):
            return None
        if model.get("type") != "BPE" or model.get("merges"):
            return None
        if model.get("dropout") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
            return None
        if model.get("byte_fallback") or model.get("fuse_unk"):
            return None
        vocab = model.get("vocab") or {}
        unk = model.get("unk_token")
        if unk is None or unk not in vocab:
            return None
        return cls(vocab, vocab[unk])

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Flat tokens of ``texts`` as (ids, offsets, first), the fields of ``featurize.Tokens``;
        None when a text cannot be read as code points (a lone surrogate), so that the
        caller lets ``tokenizers`` decide what happens to it."""
        try:
            points = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
        except UnicodeEncodeError:
            return None
        ids = self._lookup(points)
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        starts = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        keep = np.flatnonzero(ids != _DROP)
        text_of = np.repeat(np.arange(len(texts)), lengths)[keep]
        begin = keep - starts[text_of]
        offsets = np.empty((len(keep), 2), dtype=np.int64)
        offsets[:, 0] = begin
        offsets[:, 1] = begin + 1
        first = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(np.bincount(text_of, minlength=len(texts)), out=first[1:])
        return ids[keep], offsets, first

    def _lookup(self, points: np.ndarray) -> np.ndarray:
        astral = points >= _BMP
        if not astral.any():
            return self._bmp[points]
        ids = np.empty(len(points), dtype=np.int64)
        ids[~astral] = self._bmp[points[~astral]]
        # outside the Basic Multilingual Plane (emoji, rare CJK): few, so a dict lookup each
        ids[astral] = np.fromiter((self._astral.get(int(cp), self.unk_id) for cp in points[astral]),
                                  dtype=np.int64, count=int(astral.sum()))
        return ids
