"""The project's own vocabularies tokenized with array operations.

The BiLSTM models (and the small random BERT) carry vocabularies built by train/vocab.py,
in two exact forms: characters (a BPE model without merges behind a whitespace split:
every non-whitespace character is a token) and words (WordLevel behind a whitespace split
and the regex ``\\w+|[^\\w]``: runs of word characters, and every other character alone).
``tokenizers`` computes them correctly but hands every token back through Python lists of
ids and offsets, which measured as the largest cost of the engine beside a BiLSTM (500
MSRA documents: ~0.1 core-seconds; 500 CoNLL04 documents: ~0.08). The tables here compute
the same tokens from the text's code points, for exactly those forms and nothing else
(:func:`array_tokenizer` returns None for any other); the tokenizer file stays the one
definition of the vocabulary, and the word form's character classes are read from the
tokenizer's own pre-tokenizer, not from a second Unicode table. Tests compare both with
``tokenizers`` on every code point.
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
# train/vocab.py's word pre-tokenizer, as tokenizers writes it (tests check the two agree)
WORD_PRE_TOKENIZER = {"type": "Sequence", "pretokenizers": [
    {"type": "WhitespaceSplit"},
    {"type": "Split", "pattern": {"Regex": "\\w+|[^\\w]"}, "behavior": "Isolated", "invert": False},
]}
_BMP = 0x10000
_ARROW_MAX_POINTS = 1 << 29  # WordTable: int32 byte offsets hold any text below this (a unit is ~2M characters)
_DROP = -1  # CharTable: a whitespace character, no token
_SPACE, _WORD, _OTHER = 0, 1, 2  # WordTable character classes; -1 = not probed yet

Flat = tuple[np.ndarray, np.ndarray, np.ndarray]  # (ids, offsets, first): the fields of featurize.Tokens


def array_tokenizer(tokenizer: Tokenizer) -> "CharTable | WordTable | None":
    """The array tokenizer equal to ``tokenizer``, or None when it has another form."""
    spec = json.loads(tokenizer.to_str())
    return CharTable.from_spec(spec) or WordTable.from_spec(spec, tokenizer)


def _plain(spec: dict) -> bool:
    """Nothing around the model that could change tokens or offsets."""
    return spec.get("normalizer") is None and not spec.get("added_tokens") and spec.get("post_processor") is None


def _joined(texts: Sequence[str]) -> tuple[str, np.ndarray, np.ndarray]:
    """The joined texts, each text's length and its start in the joined text (+ the end)."""
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    starts = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    return "".join(texts), lengths, starts


def _points(joined: str) -> np.ndarray | None:
    """The code points of ``joined``; None for a lone surrogate (no code point), so that
    the caller lets ``tokenizers`` decide."""
    try:
        return np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    except UnicodeEncodeError:
        return None


def _flat(ids: np.ndarray, begin: np.ndarray, end: np.ndarray, lengths: np.ndarray, starts: np.ndarray) -> Flat:
    """Tokens at joined-text positions [begin, end) (ascending) -> ids, offsets relative to
    their text, first. A token lies inside one text, so each text's first token is where
    the text's start falls among the token starts: the text of every token without a
    per-character array."""
    first = np.searchsorted(begin, starts).astype(np.int64, copy=False)
    text_of = np.repeat(np.arange(len(lengths)), np.diff(first))
    offsets = np.empty((len(begin), 2), dtype=np.int64)
    base = starts[text_of]
    np.subtract(begin, base, out=offsets[:, 0])
    np.subtract(end, base, out=offsets[:, 1])
    return ids, offsets, first


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
    def from_spec(cls, spec: dict) -> "CharTable | None":
        """The table for a tokenizer of exactly the character form, else None.

        Anything that could make ``tokenizers`` produce other tokens disqualifies it: a
        normalizer, another pre-tokenizer, merges, dropout, prefixes/suffixes, byte
        fallback, fused unknowns, added tokens (matched in the raw text), no [UNK].
        """
        model = spec.get("model") or {}
        if not _plain(spec) or spec.get("pre_tokenizer") != {"type": "WhitespaceSplit"}:
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

    def encode(self, texts: Sequence[str]) -> Flat | None:
        """Flat tokens of ``texts`` (see :data:`Flat`); None for a lone surrogate."""
        joined, lengths, starts = _joined(texts)
        points = _points(joined)
        if points is None:
            return None
        ids = self._lookup(points)
        keep = np.flatnonzero(ids != _DROP)
        return _flat(ids[keep], keep, keep + 1, lengths, starts)

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


class WordTable:
    """Tokens of a WordLevel vocabulary behind :data:`WORD_PRE_TOKENIZER`.

    A token is a maximal run of word characters, or one other character, inside a
    whitespace-separated piece; its id is the vocabulary's (or [UNK]'s). Which characters
    are word characters is what the tokenizer's own regex says: each code point is probed
    once through its pre-tokenizer ("a" + c + "a" gives one piece for a word character,
    two for whitespace, three otherwise) when it first occurs, and remembered per process.
    """

    _classes: dict[str, np.ndarray] = {}  # pre-tokenizer spec -> class per code point, shared

    def __init__(self, tokenizer: Tokenizer, vocab: dict[str, int], unk_id: int) -> None:
        self._pre = tokenizer.pre_tokenizer
        self._vocab = vocab
        self.unk_id = int(unk_id)
        key = json.dumps(WORD_PRE_TOKENIZER, sort_keys=True)
        self._cls = self._classes.setdefault(key, np.full(0x110000, -1, dtype=np.int8))
        self._ascii: bytes | None = None

    @classmethod
    def from_spec(cls, spec: dict, tokenizer: Tokenizer) -> "WordTable | None":
        model = spec.get("model") or {}
        if not _plain(spec) or spec.get("pre_tokenizer") != WORD_PRE_TOKENIZER or model.get("type") != "WordLevel":
            return None
        vocab, unk = model.get("vocab") or {}, model.get("unk_token")
        if unk is None or unk not in vocab:
            return None
        return cls(tokenizer, vocab, vocab[unk])

    def encode(self, texts: Sequence[str]) -> Flat | None:
        """Flat tokens of ``texts`` (see :data:`Flat`); None for a lone surrogate, or if a
        probe ever gave a piece count the word form cannot give (then ``tokenizers`` decides).
        An all-ASCII call (most English text) reads its classes through a 128-entry byte
        table in one ``bytes.translate``, without decoding code points."""
        joined, lengths, starts = _joined(texts)
        n = len(joined)
        if n == 0:
            return _flat(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), lengths, starts)
        if joined.isascii():
            table = self._ascii_table()
            if table is None:
                return None
            utf8 = joined.encode("ascii")
            cls = np.frombuffer(utf8.translate(table), dtype=np.int8)
            points = None
        else:
            points = _points(joined)
            if points is None:
                return None
            cls = self._classes_of(points)
            if cls is None:
                return None
            utf8 = joined.encode("utf-8")
        text_start = np.zeros(n + 1, dtype=bool)
        text_start[starts[:-1]] = True  # empty texts mark the next text's start, harmlessly
        word, other = cls == _WORD, cls == _OTHER
        prev_word = np.zeros(n, dtype=bool)
        prev_word[1:] = word[:-1]
        prev_word &= ~text_start[:n]  # a text's first character never continues the previous text's word
        next_word = np.zeros(n, dtype=bool)
        next_word[:-1] = word[1:]
        next_word &= ~text_start[1:]
        begin = np.flatnonzero(other | (word & ~prev_word))
        end = np.flatnonzero(other | (word & ~next_word)) + 1
        return _flat(self._lookup(joined, utf8, points, cls, begin, end), begin, end, lengths, starts)

    def _lookup(self, joined: str, utf8: bytes, points: np.ndarray | None, cls: np.ndarray, begin: np.ndarray,
                end: np.ndarray) -> np.ndarray:
        """Vocabulary ids of the tokens at [begin, end): Arrow hashes the tokens (C++) and
        only the distinct ones (~1 in 10 of a unit's words) are looked up in the vocabulary
        (Arrow's ``index_in`` would rebuild a hash set of the whole vocabulary every call).

        Every non-space character lies in exactly one token, so the text's UTF-8 bytes
        without its whitespace are the tokens back to back: one mask over the bytes gives
        the string array's data, the tokens' byte lengths its offsets. ``points`` is None
        for ASCII text (one byte per character)."""
        import pyarrow as pa  # here, not at import: training imports this module too
        import pyarrow.compute as pc

        n = len(cls)
        if not len(begin):
            return np.zeros(0, dtype=np.int64)
        if n >= _ARROW_MAX_POINTS:
            get, unk = self._vocab.get, self.unk_id
            return np.fromiter((get(joined[a:b], unk) for a, b in zip(begin.tolist(), end.tolist())),
                               dtype=np.int64, count=len(begin))
        kept = cls != _SPACE
        data = np.frombuffer(utf8, dtype=np.uint8)
        offsets = np.zeros(len(begin) + 1, dtype=np.int32)
        if points is None:  # ASCII: one byte per character
            data = data[kept]
            np.cumsum(end - begin, out=offsets[1:])
        else:  # UTF-8 byte offset of every code point (no lone surrogates reach here)
            width = 1 + (points >= 0x80).astype(np.int32) + (points >= 0x800) + (points >= 0x10000)
            byte_at = np.zeros(n + 1, dtype=np.int32)
            np.cumsum(width, out=byte_at[1:])
            data = data[np.repeat(kept, width)]
            np.cumsum(byte_at[end] - byte_at[begin], out=offsets[1:])
        tokens = pa.StringArray.from_buffers(len(begin), pa.py_buffer(offsets), pa.py_buffer(data))
        coded = pc.dictionary_encode(tokens)
        get, unk = self._vocab.get, self.unk_id
        distinct = coded.dictionary.to_pylist()
        table = np.fromiter((get(w, unk) for w in distinct), dtype=np.int64, count=len(distinct))
        return table[coded.indices.to_numpy()]

    def _ascii_table(self) -> bytes | None:
        """``bytes.translate`` table: ASCII byte -> its class (probed once, like any code point)."""
        if self._ascii is None:
            cls = self._classes_of(np.arange(128, dtype=np.uint32))
            if cls is None:
                return None
            self._ascii = cls.astype(np.uint8).tobytes() + bytes(128)
        return self._ascii

    def _classes_of(self, points: np.ndarray) -> np.ndarray | None:
        cls = self._cls[points]
        if (cls < 0).any():
            new = np.unique(points[cls < 0])
            probe = " ".join("a" + chr(cp) + "a" for cp in new.tolist())  # probe k starts at 4k
            pieces = self._pre.pre_tokenize_str(probe)
            count = np.bincount(np.array([o[0] for _, o in pieces], dtype=np.int64) // 4, minlength=len(new))
            if len(count) != len(new) or not np.isin(count, (1, 2, 3)).all():
                return None
            self._cls[new] = np.select([count == 1, count == 2], [_WORD, _SPACE], _OTHER)
            cls = self._cls[points]
        return cls
