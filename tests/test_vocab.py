"""Built vocabularies: the character tokenizer's BPE-without-merges form gives the same ids
and offsets as the WordLevel + one-character-split form of the first checkpoints."""
from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

from nere.export.bundle import write_tokenizer
from nere.train.vocab import SPECIALS, UNK, build_vocab_tokenizer, faster_equivalent

# CJK, Latin with case, digits, full-width forms, punctuation, emoji, a combining accent,
# every kind of whitespace the tokenizers' WhitespaceSplit knows, and special-token text
ALPHABET = list("张三在北京。，！aAbBéÉß1２３Ｘ.,!?-_") + ["🙂", "e\u0301", "\u0301"] + [
    " ", "\t", "\n", "\r", "\x0b", "\x0c", "\u3000", "\u00a0", "\u2028", "\u2029", "\x85", "\u200b", "\ufeff",
    "[UNK]", "[CLS]", "[", "]",
]


def legacy_char_tokenizer(vocab_text: str, lowercase: bool) -> Tokenizer:
    """The first checkpoints' form: WordLevel behind WhitespaceSplit + Split('.')."""
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for ch in vocab_text:
        if not ch.isspace() and ch not in vocab:
            vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")])
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    return tok


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.lists(st.sampled_from(ALPHABET), max_size=40).map("".join), min_size=1, max_size=8),
       lowercase=st.booleans())
def test_faster_char_tokenizer_is_the_same_tokenizer(texts, lowercase):
    legacy = legacy_char_tokenizer("张三北京。aAé1Ｘ!🙂", lowercase)
    faster = faster_equivalent(legacy)
    assert faster is not None and json.loads(faster.to_str())["model"]["type"] == "BPE"
    for a, b in zip(legacy.encode_batch(texts, add_special_tokens=False),
                    faster.encode_batch(texts, add_special_tokens=False)):
        assert (a.ids, a.offsets) == (b.ids, b.offsets)


def test_other_tokenizers_are_left_alone():
    word = build_vocab_tokenizer(["Alice works for Acme ."], level="word")
    assert faster_equivalent(word) is None
    assert faster_equivalent(build_vocab_tokenizer(["张三"], level="char")) is None  # already the fast form


def test_built_char_vocabulary_is_bpe_over_characters():
    tok = build_vocab_tokenizer(["张三 在北京", "张三"], level="char")
    assert json.loads(tok.to_str())["model"]["type"] == "BPE"
    enc = tok.encode("张三在 上海", add_special_tokens=False)
    assert enc.tokens == ["张", "三", "在", UNK, UNK] and enc.offsets == [(0, 1), (1, 2), (2, 3), (4, 5), (5, 6)]
    assert tok.get_vocab()["张"] == len(SPECIALS)  # most frequent first, after the specials


def test_export_writes_the_faster_form(tmp_path):
    legacy = legacy_char_tokenizer("张三", lowercase=False)
    src = tmp_path / "legacy.json"
    legacy.save(str(src))
    note = write_tokenizer(src, tmp_path / "bundle-tokenizer.json")
    assert note and "BPE" in note
    assert json.loads((tmp_path / "bundle-tokenizer.json").read_text())["model"]["type"] == "BPE"
    fast = tmp_path / "fast.json"
    build_vocab_tokenizer(["张三"], level="char").save(str(fast))
    assert write_tokenizer(fast, tmp_path / "copy.json") is None
    assert (tmp_path / "copy.json").read_bytes() == fast.read_bytes()


def test_engine_switches_off_the_piece_cache_of_character_vocabularies_only(monkeypatch):
    import nere.engine.core.featurize as featurize
    from nere.engine.core.featurize import Featurizer, is_mergeless_bpe

    char = build_vocab_tokenizer(["张三 在北京"], level="char")
    word = build_vocab_tokenizer(["Alice works ."], level="word")
    real_bpe = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2, UNK: 3}, merges=[("a", "b")], unk_token=UNK))
    assert is_mergeless_bpe(char) and not is_mergeless_bpe(word) and not is_mergeless_bpe(real_bpe)
    switched = []
    monkeypatch.setattr(featurize, "is_mergeless_bpe", lambda tok: switched.append(tok) or is_mergeless_bpe(tok))
    f = Featurizer(char, max_length=16, pad_token="[PAD]")
    assert switched == [char]
    assert f.tokenize(["张三在 上海"])[0].ids.tolist() == [5, 6, 7, 1, 1]  # still tokenizes the same
