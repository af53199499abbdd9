"""Extra per-token model inputs computed from the original characters, numpy only.

One implementation serves training and the engine: both tokenize with the featurizer
(:mod:`featurize`), then call :meth:`TokenFeatures.compute` on the flat tokens of a
whole call, then cut/window those arrays exactly as they cut/window the token ids.
Everything is array operations over code points; there is no per-character Python loop.

Three features, each optional:

* ``case_ids`` (int64, one per token): the letter case of the token's *word* in the
  original text (an uncased BERT cannot see it). A word is a run of touching tokens that
  contain letters or digits; a token without any is a word of its own. Classes:
  :data:`CASE_CLASSES`; 0 is padding / special tokens.
* ``bigram_ids`` (int64, one per token): the id of (this token's first character, the
  next token's first character) in a bigram vocabulary from training text; 1 = unknown,
  0 = padding. The next token is the next one of the same text (the last token pairs
  with an end marker), so a window cut from a long text keeps its neighbours' bigrams.
* ``lexicon_ids`` (int64, (k_sets=4, k) per token) and ``lexicon_weights`` (float32, same
  shape): SoftLexicon sets. For every dictionary word matched in the text, the character
  where it starts gets it in set B, where it ends in set E, inside in set M, and a
  one-character word in set S. Each set keeps its ``k`` most frequent words (id 0 =
  padding, weight 0); weights are the kept words' frequencies normalised over all four sets
  of the token (times 4, as in SoftLexicon), so a model only needs a weighted sum of
  word embeddings. Matches never cross a text boundary or a gap between tokens.

Words and substrings are compared as 64-bit polynomial hashes of their code points
(wrapping uint64 arithmetic), looked up with ``np.searchsorted`` in the lexicon's sorted
codes.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

CASE_CLASSES = ("pad", "lower", "title", "upper", "mixed", "digit", "punct", "other")
CASE_PAD, CASE_LOWER, CASE_TITLE, CASE_UPPER, CASE_MIXED, CASE_DIGIT, CASE_PUNCT, CASE_OTHER = range(8)
N_CASE = len(CASE_CLASSES)
LEXICON_SETS = ("B", "M", "E", "S")
BIGRAM_PAD, BIGRAM_UNK = 0, 1

# character classes (probed lazily per code point, like vocab_tokens.WordTable)
_C_SPACE, _C_UPPER, _C_LOWER, _C_DIGIT, _C_LETTER, _C_OTHER = range(6)
_CHAR_CLASS = np.full(0x110000, -1, dtype=np.int8)
_END = np.uint64(0x110000)  # the "character" after a text's last token
_MUL = np.uint64(0x100000001B3)  # FNV-64 prime: odd, so powers never vanish mod 2**64
_SEED = np.uint64(0xCBF29CE484222325)


def code_points(text: str) -> np.ndarray:
    """The text's code points (uint32); a lone surrogate becomes '?' (same length)."""
    return np.frombuffer(text.encode("utf-32-le", errors="replace"), dtype=np.uint32)


def _probe(points: np.ndarray) -> None:
    """Fill the class table for code points not seen before (Python str methods, once each)."""
    new = np.unique(points[_CHAR_CLASS[points] < 0])
    for cp in new.tolist():
        c = chr(cp)
        if c.isspace():
            k = _C_SPACE
        elif c.isupper() or c.istitle():
            k = _C_UPPER
        elif c.islower():
            k = _C_LOWER
        elif c.isdigit() or c.isnumeric():
            k = _C_DIGIT
        elif c.isalpha():
            k = _C_LETTER
        else:
            k = _C_OTHER
        _CHAR_CLASS[cp] = k


def char_classes(points: np.ndarray) -> np.ndarray:
    """Class (``_C_*``) of every code point."""
    points = np.asarray(points, dtype=np.uint32)
    if len(points):
        _probe(points)
    return _CHAR_CLASS[points]


# ---------------------------------------------------------------------------- flat text


@dataclass
class FlatText:
    """Texts joined into one code-point array, with each text's start (and the end)."""

    points: np.ndarray  # (C,) uint32
    starts: np.ndarray  # (texts + 1,) int64

    @classmethod
    def of(cls, texts: Sequence[str]) -> "FlatText":
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        starts = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        return cls(code_points("".join(texts)), starts)


def _token_positions(starts: np.ndarray, offsets: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joined-text (begin, end) of each token and the index of its text."""
    counts = np.diff(first)
    text_of = np.repeat(np.arange(len(counts)), counts)
    base = starts[text_of]
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    return offsets[:, 0] + base, offsets[:, 1] + base, text_of


def _new_text(first: np.ndarray, n: int) -> np.ndarray:
    """True at each text's first token."""
    out = np.zeros(n, dtype=bool)
    heads = first[:-1][np.diff(first) > 0]
    out[heads] = True
    return out


# ---------------------------------------------------------------------------- case


def case_classes_flat(flat: FlatText, offsets: np.ndarray, first: np.ndarray) -> np.ndarray:
    """:func:`case_classes` of many texts' flat tokens (offsets relative to each text)."""
    n = len(offsets)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    begin, end, _ = _token_positions(flat.starts, offsets, first)
    cls = char_classes(flat.points)
    # per-token counts of each character class: every non-space character finds its token
    # (token starts ascend) and one bincount tallies (token, class) pairs
    pos = np.flatnonzero(cls != _C_SPACE)
    tok = np.searchsorted(begin, pos, side="right") - 1
    inside = (tok >= 0) & (pos < end[np.maximum(tok, 0)])
    pos, tok = pos[inside], tok[inside]
    counts = np.bincount(tok * 6 + cls[pos], minlength=n * 6).reshape(n, 6)
    wordy = (counts[:, _C_UPPER] + counts[:, _C_LOWER] + counts[:, _C_DIGIT] + counts[:, _C_LETTER]) > 0
    # a word starts at a text's first token, after a gap, or next to a token without letters/digits
    head = _new_text(first, n)
    head[0] = True
    head[1:] |= (begin[1:] != end[:-1]) | ~wordy[1:] | ~wordy[:-1]
    word_first = np.flatnonzero(head)
    word_of = np.cumsum(head) - 1
    wc = np.add.reduceat(counts, word_first, axis=0)  # (words, 6)
    upper, lower, digit, letter = wc[:, _C_UPPER], wc[:, _C_LOWER], wc[:, _C_DIGIT], wc[:, _C_LETTER]
    first_char = cls[begin[word_first]]
    cased = upper + lower
    out = np.full(len(word_first), CASE_MIXED, dtype=np.int64)
    out[(cased == 0) & (letter > 0)] = CASE_OTHER
    out[(cased == 0) & (letter == 0) & (digit > 0)] = CASE_DIGIT
    out[(cased == 0) & (letter == 0) & (digit == 0)] = CASE_PUNCT
    out[(cased > 0) & (upper == 0)] = CASE_LOWER
    out[(upper > 1) & (lower == 0)] = CASE_UPPER
    out[(upper == 1) & (first_char == _C_UPPER)] = CASE_TITLE  # "Paris", "A", "X1"
    return out[word_of]


def case_classes(text: str, offsets: np.ndarray) -> np.ndarray:
    """Case class (:data:`CASE_CLASSES`) of every token of one text, from its (n, 2) offsets."""
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    return case_classes_flat(FlatText.of([text]), offsets, np.array([0, len(offsets)], dtype=np.int64))


# ---------------------------------------------------------------------------- bigrams


def _bigram_codes(flat: FlatText, offsets: np.ndarray, first: np.ndarray) -> np.ndarray:
    """int64 code of (first char of token i, first char of token i+1 of the same text)."""
    n = len(offsets)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    begin, _, _ = _token_positions(flat.starts, offsets, first)
    cur = flat.points[begin].astype(np.int64)
    nxt = np.empty(n, dtype=np.int64)
    nxt[:-1] = cur[1:]
    last = np.zeros(n, dtype=bool)
    last[:-1] = _new_text(first, n)[1:]
    last[-1] = True
    nxt[last] = int(_END)
    return cur * (int(_END) + 1) + nxt


class BigramVocab:
    """Sorted int64 bigram codes; id = 2 + position (0 padding, 1 unknown)."""

    def __init__(self, codes: np.ndarray) -> None:
        self.codes = np.unique(np.asarray(codes, dtype=np.int64))

    def __len__(self) -> int:
        """Embedding rows needed (codes + padding + unknown)."""
        return len(self.codes) + 2

    @classmethod
    def build(cls, texts: Sequence[str], offsets: np.ndarray, first: np.ndarray, min_freq: int = 1) -> "BigramVocab":
        """The bigrams of tokenized training texts seen at least ``min_freq`` times."""
        codes, counts = np.unique(_bigram_codes(FlatText.of(texts), offsets, first), return_counts=True)
        return cls(codes[counts >= min_freq])

    def ids(self, codes: np.ndarray) -> np.ndarray:
        if len(self.codes) == 0:
            return np.full(len(codes), BIGRAM_UNK, dtype=np.int64)
        at = np.searchsorted(self.codes, codes)
        hit = self.codes[np.minimum(at, len(self.codes) - 1)] == codes
        return np.where(hit, at + 2, BIGRAM_UNK).astype(np.int64)

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, codes=self.codes)

    @classmethod
    def load(cls, path: str | Path) -> "BigramVocab":
        with np.load(path) as f:
            return cls(f["codes"])


def bigram_ids(flat: FlatText, offsets: np.ndarray, first: np.ndarray, vocab: BigramVocab) -> np.ndarray:
    """Bigram id of every flat token (see the module docstring)."""
    return vocab.ids(_bigram_codes(flat, offsets, first))


# ---------------------------------------------------------------------------- lexicon


def _hash_step(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (h * _MUL) ^ points.astype(np.uint64)


def _finish(h: np.ndarray, length: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        return ((h * _MUL) ^ np.uint64(length)).view(np.int64)


def word_codes(words: Sequence[str]) -> np.ndarray:
    """int64 hash code of each word (the same codes :func:`substring_codes` gives)."""
    out = np.zeros(len(words), dtype=np.int64)
    if not len(words):
        return out
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    flat = code_points("".join(words))
    starts = np.cumsum(lengths) - lengths
    for length in np.unique(lengths).tolist():  # one pass per word length, vectorised over words
        sel = np.flatnonzero(lengths == length)
        h = np.full(len(sel), _SEED, dtype=np.uint64)
        for j in range(length):
            h = _hash_step(h, flat[starts[sel] + j])
        out[sel] = _finish(h, length)
    return out


@dataclass
class Lexicon:
    """A word list as sorted int64 hash codes, each with a frequency and an embedding id
    (1 + position; 0 = padding). Saved as a small .npz; the words themselves are kept too
    (UTF-8, newline-joined) so a bundle's lexicon can be read and restricted again."""

    codes: np.ndarray  # (W,) int64, sorted, unique
    freqs: np.ndarray  # (W,) float32
    lengths: np.ndarray  # (W,) int16, characters per word
    words: tuple[str, ...] = ()

    @classmethod
    def build(cls, pairs: Iterable[tuple[str, float]], max_len: int = 10) -> "Lexicon":
        """From (word, frequency) pairs; words longer than ``max_len`` or containing
        whitespace are left out; a repeated word keeps its largest frequency."""
        best: dict[str, float] = {}
        for word, freq in pairs:
            if 0 < len(word) <= max_len and not any(c.isspace() for c in word):
                f = float(freq)
                if f > best.get(word, -1.0):
                    best[word] = f
        words = list(best)
        codes = word_codes(words)
        order = np.argsort(codes, kind="stable")
        codes = codes[order]
        keep = np.ones(len(codes), dtype=bool)
        keep[1:] = codes[1:] != codes[:-1]  # a hash collision keeps the first word
        order = order[keep]
        freqs = np.fromiter(best.values(), dtype=np.float64, count=len(words))
        lens = np.fromiter(map(len, words), dtype=np.int16, count=len(words))
        return cls(codes[keep], freqs[order].astype(np.float32), lens[order], tuple(words[i] for i in order.tolist()))

    @classmethod
    def from_dict_file(cls, path: str | Path, max_len: int = 10) -> "Lexicon":
        """A ``word freq [pos]`` text file (jieba's dict.txt format)."""
        pairs = []
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) >= 2:
                try:
                    pairs.append((parts[0], float(parts[1])))
                except ValueError:
                    continue
        return cls.build(pairs, max_len)

    def __post_init__(self) -> None:
        # a bit per low-bits bucket of the codes: most substrings are no word, and this
        # rules them out with one small-table read instead of a binary search
        bits = max(16, min(24, int(len(self.codes)).bit_length() + 5))
        self._mask = np.int64((1 << bits) - 1)
        self._seen = np.zeros(1 << bits, dtype=bool)
        self._seen[self.codes & self._mask] = True
        self.freq_rank = np.empty(len(self.codes), dtype=np.int64)  # 0 = most frequent
        self.freq_rank[np.argsort(-self.freqs, kind="stable")] = np.arange(len(self.codes))

    def __len__(self) -> int:
        """Embedding rows needed (words + padding)."""
        return len(self.codes) + 1

    @property
    def max_len(self) -> int:
        return int(self.lengths.max()) if len(self.lengths) else 0

    def subset(self, keep: np.ndarray) -> "Lexicon":
        """Only the words at positions where ``keep`` is true (ids are renumbered)."""
        keep = np.asarray(keep, dtype=bool)
        words = tuple(w for w, k in zip(self.words, keep.tolist()) if k) if self.words else ()
        return Lexicon(self.codes[keep], self.freqs[keep], self.lengths[keep], words)

    def matches(self, flat: FlatText, offsets: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every dictionary word found in the tokens: (first token, token count, word index).

        A candidate spans ``length`` consecutive tokens of one text with no gap between
        them; its hash is built one length at a time, vectorised over all start tokens.
        """
        n = len(offsets)
        empty = np.zeros(0, dtype=np.int64)
        if n == 0 or len(self.codes) == 0:
            return empty, empty, empty
        begin, end, _ = _token_positions(flat.starts, offsets, first)
        pts = flat.points[begin]
        # run id: tokens that touch within a text share it; a word must stay in one run
        brk = _new_text(first, n)
        brk[0] = True
        brk[1:] |= begin[1:] != end[:-1]
        run = np.cumsum(brk)
        lengths_present = set(np.unique(self.lengths).tolist())
        starts_all, lens_all, words_all = [], [], []
        h = np.full(n, _SEED, dtype=np.uint64)
        for length in range(1, self.max_len + 1):
            m = n - length + 1
            if m <= 0:
                break
            h = _hash_step(h[:m], pts[length - 1 : length - 1 + m])
            if length not in lengths_present:
                continue
            codes = _finish(h, length)
            cand = np.flatnonzero(self._seen[codes & self._mask])
            cand = cand[run[cand] == run[cand + length - 1]]
            at = np.minimum(np.searchsorted(self.codes, codes[cand]), len(self.codes) - 1)
            hit = (self.codes[at] == codes[cand]) & (self.lengths[at] == length)
            starts_all.append(cand[hit])
            lens_all.append(np.full(int(hit.sum()), length, dtype=np.int64))
            words_all.append(at[hit])
        if not starts_all:
            return empty, empty, empty
        return (np.concatenate(starts_all).astype(np.int64), np.concatenate(lens_all),
                np.concatenate(words_all).astype(np.int64))

    def save(self, path: str | Path) -> None:
        blob = np.frombuffer("\n".join(self.words).encode("utf-8"), dtype=np.uint8)
        np.savez_compressed(path, codes=self.codes, freqs=self.freqs, lengths=self.lengths, words=blob)

    @classmethod
    def load(cls, path: str | Path) -> "Lexicon":
        with np.load(path) as f:
            blob = f["words"].tobytes().decode("utf-8") if "words" in f.files else ""
            words = tuple(blob.split("\n")) if blob else ()
            return cls(f["codes"].astype(np.int64), f["freqs"].astype(np.float32), f["lengths"].astype(np.int16), words)


def jieba_dict_path() -> Path:
    """jieba's dictionary file, read as data: located without importing jieba."""
    spec = importlib.util.find_spec("jieba")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package 'jieba' is not installed (its dict.txt is the default lexicon)")
    path = Path(next(iter(spec.submodule_search_locations))) / "dict.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    return path


def lexicon_features(flat: FlatText, offsets: np.ndarray, first: np.ndarray, lexicon: Lexicon,
                     k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """SoftLexicon inputs of every flat token: ids (n, 4, k) int64 (1 + lexicon index,
    0 = padding) and weights (n, 4, k) float32 (see the module docstring)."""
    n = len(offsets)
    ids = np.zeros((n, 4, k), dtype=np.int64)
    weights = np.zeros((n, 4, k), dtype=np.float32)
    start, length, word = lexicon.matches(flat, offsets, first)
    if len(start) == 0:
        return ids, weights
    # (token, set, word) triples: B at the start, E at the end, M inside, S for one token
    single = length == 1
    multi = ~single
    ms, ml, mw = start[multi], length[multi], word[multi]
    inner = np.maximum(ml - 2, 0)
    owner = np.repeat(np.arange(len(ms)), inner)
    step = np.arange(int(inner.sum())) - np.repeat(np.cumsum(inner) - inner, inner) + 1
    tok = np.concatenate([ms, ms + ml - 1, ms[owner] + step, start[single]])
    sset = np.concatenate([np.zeros(len(ms), np.int64), np.full(len(ms), 2, np.int64),
                           np.ones(len(owner), np.int64), np.full(int(single.sum()), 3, np.int64)])
    wid = np.concatenate([mw, mw, mw[owner], word[single]])
    # keep the k most frequent words per (token, set): sort by group, then by frequency rank
    group = tok * 4 + sset
    order = np.argsort(group * len(lexicon.codes) + lexicon.freq_rank[wid], kind="stable")
    group, wid = group[order], wid[order]
    new = np.ones(len(group), dtype=bool)
    new[1:] = group[1:] != group[:-1]
    head = np.flatnonzero(new)
    rank = np.arange(len(group)) - np.repeat(head, np.diff(np.append(head, len(group))))
    kept = rank < k
    group, wid, rank = group[kept], wid[kept], rank[kept]
    freq = lexicon.freqs[wid].astype(np.float64)
    t, s = group // 4, group % 4
    total = np.bincount(t, weights=freq, minlength=n)
    ids[t, s, rank] = wid + 1
    weights[t, s, rank] = (4.0 * freq / total[t]).astype(np.float32)
    return ids, weights


# ---------------------------------------------------------------------------- all of them


@dataclass
class TokenFeatures:
    """Which extra inputs a model reads, and the data they need; computes them for the
    flat tokens of many texts (the same call in training and in the engine)."""

    case: bool = False
    bigrams: BigramVocab | None = None
    lexicon: Lexicon | None = None
    lexicon_k: int = 3

    BIGRAM_FILE = "bigrams.npz"
    LEXICON_FILE = "lexicon.npz"

    def __bool__(self) -> bool:
        return self.case or self.bigrams is not None or self.lexicon is not None

    @property
    def input_names(self) -> list[str]:
        """Graph input names, in the order models take them after (input_ids, attention_mask)."""
        names = ["case_ids"] if self.case else []
        if self.bigrams is not None:
            names.append("bigram_ids")
        if self.lexicon is not None:
            names += ["lexicon_ids", "lexicon_weights"]
        return names

    def compute(self, texts: Sequence[str], offsets: np.ndarray, first: np.ndarray) -> dict[str, np.ndarray]:
        """Name -> array with one row per flat token (``offsets`` relative to each text,
        text k owning tokens ``first[k]:first[k + 1]``, as in featurize.Tokens)."""
        flat = FlatText.of(texts)
        offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        first = np.asarray(first, dtype=np.int64)
        out: dict[str, np.ndarray] = {}
        if self.case:
            out["case_ids"] = case_classes_flat(flat, offsets, first)
        if self.bigrams is not None:
            out["bigram_ids"] = bigram_ids(flat, offsets, first, self.bigrams)
        if self.lexicon is not None:
            out["lexicon_ids"], out["lexicon_weights"] = lexicon_features(flat, offsets, first, self.lexicon,
                                                                          self.lexicon_k)
        return out

    def config(self) -> dict:
        """What a checkpoint's config.json records (the data goes in files beside it)."""
        return {
            "case": self.case,
            "bigrams": None if self.bigrams is None else {"file": self.BIGRAM_FILE, "size": len(self.bigrams)},
            "lexicon": None if self.lexicon is None else {"file": self.LEXICON_FILE, "size": len(self.lexicon),
                                                          "k": self.lexicon_k},
        }

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        if self.bigrams is not None:
            self.bigrams.save(folder / self.BIGRAM_FILE)
        if self.lexicon is not None:
            self.lexicon.save(folder / self.LEXICON_FILE)

    @classmethod
    def load(cls, config: dict | None, folder: str | Path) -> "TokenFeatures":
        """From a config entry (:meth:`config`) and the folder holding its files."""
        if not config:
            return cls()
        folder = Path(folder)
        big, lex = config.get("bigrams"), config.get("lexicon")
        return cls(case=bool(config.get("case")),
                   bigrams=BigramVocab.load(folder / big["file"]) if big else None,
                   lexicon=Lexicon.load(folder / lex["file"]) if lex else None,
                   lexicon_k=int(lex["k"]) if lex else 3)


def scatter_rows(values: np.ndarray, starts: np.ndarray, counts: np.ndarray, lead: int, width: int,
                 fill: float = 0) -> np.ndarray:
    """A padded (rows, width, ...) array whose row i holds ``values[starts[i]:starts[i] +
    counts[i]]`` from position ``lead`` on (after [CLS]), ``fill`` elsewhere: the layout
    of featurize.Featurizer.collate_flat's input_ids."""
    starts = np.asarray(starts, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    out = np.full((len(counts), width) + values.shape[1:], fill, dtype=values.dtype)
    row = np.repeat(np.arange(len(counts)), counts)
    pos = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    out[row, lead + pos] = values[starts[row] + pos]
    return out


def scatter_batches(values: np.ndarray, starts: np.ndarray, counts: np.ndarray, sizes: Sequence[int],
                    widths: Sequence[int], lead: int, fill: float = 0) -> list[np.ndarray]:
    """:func:`scatter_rows` for consecutive runs of rows at once, in the layout of
    featurize.Featurizer.collate_flat_many: array k holds the next ``sizes[k]`` rows,
    ``widths[k]`` wide (the width of that call's batch k)."""
    starts = np.asarray(starts, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    sizes_a = np.asarray(sizes, dtype=np.int64)
    widths_a = np.asarray(widths, dtype=np.int64)
    cells = sizes_a * widths_a
    cell_first = np.cumsum(cells) - cells
    row_first = np.cumsum(sizes_a) - sizes_a
    batch_of = np.repeat(np.arange(len(sizes_a)), sizes_a)
    row_at = cell_first[batch_of] + (np.arange(len(counts)) - row_first[batch_of]) * widths_a[batch_of]
    flat = np.full((int(cells.sum()),) + values.shape[1:], fill, dtype=values.dtype)
    row = np.repeat(np.arange(len(counts)), counts)
    pos = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    flat[row_at[row] + lead + pos] = values[starts[row] + pos]
    return [flat[c0 : c0 + n * w].reshape((n, w) + values.shape[1:])
            for c0, n, w in zip(cell_first.tolist(), sizes_a.tolist(), widths_a.tolist())]
