"""Text -> model inputs, with character offsets kept. Shared by training and the engine.

Every model (BERT or BiLSTM) reads a Hugging Face ``tokenizers`` JSON file: a WordPiece
tokenizer for a pretrained BERT, or a vocabulary built from training text (words:
WordLevel; characters: BPE without merges), which is looked up with array operations
(:mod:`vocab_tokens`, the same tokens). We
tokenize *without* special tokens and add [CLS]/[SEP] ourselves, so that a long text can
be cut into windows of token ids without tokenizing it twice.

Labelling policy (documented in README): every sub-word carries a tag (all-subword
labelling). An entity's first sub-word gets B (or S), the rest I/E. Predicted spans map
back to characters through the first and last sub-word's offsets, so no compaction of
emissions is needed before the CRF and the CRF mask stays a left-aligned prefix.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tokenizers import Tokenizer, models

from nere.engine.core.tags import TokenSpan
from nere.engine.core.vocab_tokens import array_tokenizer


@dataclass
class Encoded:
    """One tokenized text: content token ids and their character offsets (no specials)."""

    ids: np.ndarray  # (n,) int64
    offsets: np.ndarray  # (n, 2) int64, end exclusive


@dataclass
class Tokens:
    """Many tokenized texts as flat arrays: text k owns tokens ``first[k]:first[k + 1]``.

    The engine keeps a unit's tokens this way so that building a batch is a few array
    operations rather than one Python object per sentence.
    """

    ids: np.ndarray  # (N,) int64
    offsets: np.ndarray  # (N, 2) int64, relative to each text
    first: np.ndarray  # (texts + 1,) int64

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.first)

    def __len__(self) -> int:
        return len(self.first) - 1

    def encoded(self, k: int) -> Encoded:
        a, b = int(self.first[k]), int(self.first[k + 1])
        return Encoded(self.ids[a:b], self.offsets[a:b])


@dataclass
class Batch:
    """Padded model inputs. ``offsets`` is -1 at special and padding positions."""

    input_ids: np.ndarray  # (B, T) int64
    attention_mask: np.ndarray  # (B, T) int64, a left-aligned prefix
    offsets: np.ndarray | None  # (B, T, 2) int64; None when not asked for (the engine maps through its flat tokens)
    lengths: np.ndarray  # (B,) int64, tokens incl. specials
    # extra per-token model inputs by graph input name (nere.engine.core.features), laid
    # out like input_ids (0 at special and padding positions); empty for most models
    extras: dict[str, np.ndarray] = field(default_factory=dict)


class Featurizer:
    """Tokenizes texts and assembles padded batches for one model."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        max_length: int,
        cls_token: str | None = None,
        sep_token: str | None = None,
        pad_token: str = "[PAD]",
    ) -> None:
        # A tokenizer.json may carry truncation/padding settings (the MiniLM one truncates
        # and pads to 128): that would silently cut long texts before we window them.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        _no_piece_cache(tokenizer)
        self.tokenizer = tokenizer
        self.array_tokenizer = array_tokenizer(tokenizer)  # None unless a vocabulary of train/vocab.py
        self.max_length = int(max_length)
        self.cls_id = self._token_id(cls_token) if cls_token else None
        self.sep_id = self._token_id(sep_token) if sep_token else None
        self.pad_id = self._token_id(pad_token)
        self.lead = int(self.cls_id is not None)  # position of the first content token
        self.n_special = self.lead + int(self.sep_id is not None)
        if self.max_length <= self.n_special:
            raise ValueError(f"max_length {max_length} leaves no room for text")

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> "Featurizer":
        return cls(Tokenizer.from_file(str(path)), **kwargs)

    def _token_id(self, token: str) -> int:
        tid = self.tokenizer.token_to_id(token)
        if tid is None:
            raise ValueError(f"tokenizer has no token {token!r}")
        return tid

    @property
    def max_content(self) -> int:
        """Content tokens that fit in one window next to the special tokens."""
        return self.max_length - self.n_special

    def tokenize(self, texts: Sequence[str]) -> list[Encoded]:
        """Batch-tokenize (in parallel, in Rust) without special tokens."""
        tokens = self.tokenize_flat(texts)
        return [tokens.encoded(k) for k in range(len(tokens))]

    def tokenize_flat(self, texts: Sequence[str]) -> Tokens:
        """:meth:`tokenize` as flat arrays (one array build for the whole call).

        Zero-width pieces are dropped: they carry no text. A word or character vocabulary
        of train/vocab.py is looked up with array operations (the same tokens, :mod:`vocab_tokens`).
        """
        texts = texts if isinstance(texts, list) else list(texts)  # read twice below
        if self.array_tokenizer is not None:
            flat = self.array_tokenizer.encode(texts)
            if flat is not None:
                return Tokens(*flat)
        encs = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        counts = np.fromiter(map(len, encs), dtype=np.int64, count=len(encs))  # len() builds no id list
        total = int(counts.sum())
        ids = np.fromiter(chain.from_iterable(e.ids for e in encs), dtype=np.int64, count=total)
        offsets = np.fromiter(chain.from_iterable(chain.from_iterable(e.offsets for e in encs)),
                              dtype=np.int64, count=2 * total).reshape(-1, 2)
        keep = offsets[:, 1] > offsets[:, 0]
        if not keep.all():
            text_of = np.repeat(np.arange(len(encs)), counts)
            counts = np.bincount(text_of[keep], minlength=len(encs)).astype(np.int64)
            ids, offsets = ids[keep], offsets[keep]
        first = np.zeros(len(encs) + 1, dtype=np.int64)
        np.cumsum(counts, out=first[1:])
        return Tokens(ids, offsets, first)

    def collate(self, items: Sequence[Encoded], min_width: int = 0) -> Batch:
        """Add specials and pad. Items longer than ``max_content`` must be windowed first."""
        if not items:
            return self.collate_flat(np.zeros(0, np.int64), np.zeros((0, 2), np.int64),
                                     np.zeros(0, np.int64), np.zeros(0, np.int64))
        counts = np.fromiter((len(it.ids) for it in items), dtype=np.int64, count=len(items))
        starts = np.cumsum(counts) - counts
        return self.collate_flat(np.concatenate([it.ids for it in items]),
                                 np.concatenate([np.asarray(it.offsets).reshape(-1, 2) for it in items]),
                                 starts, counts, min_width)

    def collate_flat(self, ids: np.ndarray, offsets: np.ndarray | None, starts: np.ndarray, counts: np.ndarray,
                     min_width: int = 0) -> Batch:
        """A padded batch whose row i holds tokens ``starts[i]:starts[i] + counts[i]`` of the
        flat ``ids``/``offsets`` (a sentence or a window of one), plus the specials; at least
        ``min_width`` wide (the engine pads to width buckets in the same allocation).
        Without ``offsets`` the batch carries none (a third of the work, unused by the engine)."""
        return self.collate_flat_many(ids, offsets, starts, counts, [len(counts)], [min_width])[0]

    def collate_flat_many(self, ids: np.ndarray, offsets: np.ndarray | None, starts: np.ndarray,
                          counts: np.ndarray, sizes: Sequence[int], min_widths: Sequence[int]) -> list[Batch]:
        """:meth:`collate_flat` of consecutive runs of rows at once: batch k holds the next
        ``sizes[k]`` rows of ``starts``/``counts``, at least ``min_widths[k]`` wide. All the
        batches are views of one buffer filled by a few array operations, so a unit's many
        small batches cost about what one large batch does."""
        starts = np.asarray(starts, dtype=np.int64)
        counts = np.asarray(counts, dtype=np.int64)
        sizes_a = np.asarray(sizes, dtype=np.int64)
        if int(sizes_a.sum()) != len(counts):
            raise ValueError(f"batch sizes add up to {int(sizes_a.sum())}, not the {len(counts)} rows given")
        lengths = counts + self.n_special
        if len(counts) and lengths.max() > self.max_length:
            raise ValueError(f"an item has {lengths.max()} tokens > max_length {self.max_length}")
        row_first = np.cumsum(sizes_a) - sizes_a
        longest = np.zeros(len(sizes_a), dtype=np.int64)
        filled = sizes_a > 0
        if filled.any():
            longest[filled] = np.maximum.reduceat(lengths, row_first[filled])
        widths = np.maximum(longest, np.asarray(min_widths, dtype=np.int64))
        widths[~filled] = 0  # an empty batch is (0, 0), as ever
        batch_of = np.repeat(np.arange(len(sizes_a)), sizes_a)
        cells = sizes_a * widths
        cell_first = np.cumsum(cells) - cells
        row_at = cell_first[batch_of] + (np.arange(len(counts)) - row_first[batch_of]) * widths[batch_of]
        total = int(cells.sum())
        flat_ids = np.full(total, self.pad_id, dtype=np.int64)
        row, src = expand_ranges(starts, counts)
        at = row_at[row] + self.lead + (src - starts[row])
        flat_ids[at] = ids[src]
        flat_offs = None
        if offsets is not None:
            flat_offs = np.full((total, 2), -1, dtype=np.int64)
            flat_offs[at] = offsets[src]
        if self.lead:
            flat_ids[row_at] = self.cls_id
        if self.sep_id is not None:
            flat_ids[row_at + self.lead + counts] = self.sep_id
        flat_mask = np.zeros(total, dtype=np.int64)
        flat_mask[expand_ranges(row_at, lengths)[1]] = 1  # a left-aligned prefix of each row
        out = []
        for c0, n, w, r0 in zip(cell_first.tolist(), sizes_a.tolist(), widths.tolist(), row_first.tolist()):
            cut = slice(c0, c0 + n * w)
            out.append(Batch(flat_ids[cut].reshape(n, w), flat_mask[cut].reshape(n, w),
                             None if flat_offs is None else flat_offs[cut].reshape(n, w, 2), lengths[r0 : r0 + n]))
        return out

    def truncate(self, item: Encoded) -> tuple[Encoded, bool]:
        """Cut an item to ``max_content`` tokens; says whether anything was cut."""
        if len(item.ids) <= self.max_content:
            return item, False
        m = self.max_content
        return Encoded(item.ids[:m], item.offsets[:m]), True


def expand_ranges(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every position of the ranges ``starts[k]:starts[k] + counts[k]``, flat and in order,
    with the index k of its range: (range index, position) arrays, no Python loop."""
    counts = np.asarray(counts, dtype=np.int64)
    owner = np.repeat(np.arange(len(counts)), counts)
    first = np.cumsum(counts) - counts
    return owner, np.asarray(starts, dtype=np.int64)[owner] + np.arange(int(counts.sum())) - first[owner]


def _no_piece_cache(tokenizer: Tokenizer) -> None:
    """Switch off the word cache of a BPE model without merges (the character vocabularies,
    train/vocab.py). It caches each whitespace-separated piece, for Chinese a whole
    sentence, up to 10,000 of them: ~20 MB of RSS on a long run (measured: 200,000 MSRA
    sentences, steady 213 -> 234 MB) for pieces that rarely repeat in a real corpus."""
    if is_mergeless_bpe(tokenizer):
        tokenizer.model._resize_cache(0)  # tokenizers' own switch (no public one); capacity 0 stores nothing


def is_mergeless_bpe(tokenizer: Tokenizer) -> bool:
    """A BPE model with no merges: one token per character of each whitespace-separated piece."""
    return isinstance(tokenizer.model, models.BPE) and not json.loads(tokenizer.to_str())["model"].get("merges")


def window_starts(n_tokens: int, size: int, stride: int) -> list[int]:
    """Token start positions of overlapping windows that cover ``n_tokens`` tokens."""
    if size <= 0 or not (0 < stride <= size):
        raise ValueError("need 0 < stride <= size")
    if n_tokens <= size:
        return [0]
    starts = list(range(0, n_tokens - size, stride))
    starts.append(n_tokens - size)
    return starts


def char_to_token_spans(
    offsets: np.ndarray, spans: Iterable[tuple[int, int, str]]
) -> tuple[list[TokenSpan], int]:
    """Map character spans onto the tokens they cover.

    ``offsets`` are content-token offsets (n, 2). A span covers every token that overlaps
    it; when a span's edge cuts a token (or it covers no token) it is counted as
    misaligned and, in the no-token case, dropped. Returns (token spans, misaligned).
    """
    starts, ends = offsets[:, 0], offsets[:, 1]
    out: list[TokenSpan] = []
    bad = 0
    for s, e, label in spans:
        hit = np.nonzero((starts < e) & (ends > s))[0]
        if len(hit) == 0:
            bad += 1
            continue
        first, last = int(hit[0]), int(hit[-1])
        if starts[first] != s or ends[last] != e:
            bad += 1
        out.append((first, last + 1, label))
    return out, bad


def token_to_char_spans(offsets: np.ndarray, spans: Iterable[TokenSpan]) -> list[tuple[int, int, str]]:
    """Token spans (over rows of ``offsets``) back to character spans."""
    return [(int(offsets[s, 0]), int(offsets[e - 1, 1]), lab) for s, e, lab in spans]
