"""The array character tokenizer gives exactly the tokens of ``tokenizers`` for the
character-vocabulary form, and refuses every other form."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from nere.engine.core.char_tokens import CharTable
from nere.engine.core.featurize import Featurizer
from nere.train.vocab import build_vocab_tokenizer

# characters in the vocabulary: ASCII, Latin-1, CJK, a combining mark, astral (emoji, CJK ext. B),
# and a space and an ideographic space (whitespace is dropped even when the vocabulary lists it)
VOCAB_TEXT = "abcXYZ09,.!é北京张三。，\u0301😀𠀀\U0010fffd"


def char_tokenizer(extra: str = " \u3000") -> Tokenizer:
    tok = build_vocab_tokenizer([VOCAB_TEXT], level="char")
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for ch in extra:
        vocab.setdefault(ch, len(vocab))
    return Tokenizer.from_str(json.dumps(spec))


def reference(tok: Tokenizer, texts: list[str]) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    encs = tok.encode_batch(texts, add_special_tokens=False)
    return [e.ids for e in encs], [e.offsets for e in encs]


def assert_same(table: CharTable, tok: Tokenizer, texts: list[str]) -> None:
    ids, offsets, first = table.encode(texts)
    ref_ids, ref_offsets = reference(tok, texts)
    assert first.tolist() == np.cumsum([0] + [len(r) for r in ref_ids]).tolist()
    assert ids.tolist() == [i for r in ref_ids for i in r]
    assert [tuple(o) for o in offsets.tolist()] == [o for r in ref_offsets for o in r]


def test_every_code_point_gets_the_tokenizers_token():
    tok = char_tokenizer()
    table = CharTable.from_tokenizer(tok)
    assert table is not None
    points = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]  # all but surrogates
    texts = ["".join(map(chr, points[i:i + 4096])) for i in range(0, len(points), 4096)]
    assert_same(table, tok, texts)


PIECES = list("ab 北京é😀𠀀\u0301\t\n\r\x1c\x1f\x85\xa0\u2000\u200b\u3000,.Q[]") + ["[UNK]", "[CLS]", "  ", ""]


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.one_of(st.text(max_size=30).filter(lambda t: not any(0xD800 <= ord(c) < 0xE000 for c in t)),
                                st.lists(st.sampled_from(PIECES), max_size=12).map("".join)), max_size=8))
def test_random_batches_match_tokenizers(texts):
    tok = char_tokenizer()
    assert_same(CharTable.from_tokenizer(tok), tok, texts)


def _with(tok: Tokenizer, **changes) -> Tokenizer:
    spec = json.loads(tok.to_str())
    for path, value in changes.items():
        node = spec
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return Tokenizer.from_str(json.dumps(spec))


def test_other_tokenizer_forms_are_refused():
    base = build_vocab_tokenizer([VOCAB_TEXT + " ab"], level="char")
    base = _with(base, model__vocab={**json.loads(base.to_str())["model"]["vocab"], "ab": 999})
    assert CharTable.from_tokenizer(base) is not None
    lower = build_vocab_tokenizer([VOCAB_TEXT], level="char", lowercase=True)
    word = build_vocab_tokenizer(["a b c"], level="word")
    added = Tokenizer.from_str(base.to_str())
    added.add_special_tokens(["[CLS]"])
    refused = [
        lower, word, added,
        _with(base, model__merges=[["a", "b"]]),
        _with(base, model__fuse_unk=True),
        _with(base, model__byte_fallback=True),
        _with(base, model__dropout=0.1),
        _with(base, model__continuing_subword_prefix="##"),
        _with(base, model__end_of_word_suffix="</w>"),
        _with(base, model__unk_token=None),
        _with(base, pre_tokenizer={"type": "Whitespace"}),
    ]
    for tok in refused:
        assert CharTable.from_tokenizer(tok) is None, tok.to_str()[:200]


def test_featurizer_uses_the_table_and_falls_back_for_a_lone_surrogate():
    tok = char_tokenizer()
    f = Featurizer(Tokenizer.from_str(tok.to_str()), max_length=64)
    assert f.char_table is not None
    flat = f.tokenize_flat(["北京 ab", "", "😀"])
    assert flat.ids.tolist() == [i for r in reference(tok, ["北京 ab", "", "😀"])[0] for i in r]
    assert f.char_table.encode(["a\ud800"]) is None
    with pytest.raises(TypeError):  # what tokenizers itself does with such a text
        f.tokenize_flat(["a\ud800"])
    word = Featurizer(build_vocab_tokenizer(["a b"], level="word"), max_length=64)
    assert word.char_table is None
