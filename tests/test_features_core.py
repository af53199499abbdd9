"""engine/core/features.py: case classes, bigram ids, SoftLexicon sets (numpy only)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from nere.engine.core.featurize import Featurizer
from nere.engine.core.features import (
    CASE_CLASSES, BigramVocab, FlatText, Lexicon, TokenFeatures, case_classes, jieba_dict_path, lexicon_features,
    scatter_rows, word_codes,
)
from nere.train.vocab import PAD, build_vocab_tokenizer, default_bert_path, load_pretrained_tokenizer

ZH = ["我是中国人", "中国　人民银行", "北京欢迎你。𠀋字", ""]


def char_featurizer(texts):
    tok = build_vocab_tokenizer(texts, level="char")
    return Featurizer(tok, max_length=64, pad_token=PAD)


def names(ids):
    return [CASE_CLASSES[i] for i in ids]


def lexicon():
    return Lexicon.build([("中国", 10), ("国人", 3), ("中国人", 5), ("人", 2), ("人民", 8), ("人民银行", 4),
                          ("银行", 9), ("北京", 7), ("欢迎", 6)])


def test_case_classes_exact():
    text = "Hello WORLD, McDonald 42 x A iPhone 中国 --"
    words = [(m.start(), m.end()) for m in __import__("re").finditer(r"\w+|[^\w\s]", text)]
    offs = np.array(words)
    got = names(case_classes(text, offs))
    assert got == ["title", "upper", "punct", "mixed", "digit", "lower", "title", "mixed", "other", "punct", "punct"]


def test_case_classes_word_of_subwords():
    """Sub-words that touch share their word's class; punctuation breaks words."""
    text = "McDonald's USA"
    offs = np.array([[0, 2], [2, 5], [5, 8], [8, 9], [9, 10], [11, 13], [13, 14]])
    assert names(case_classes(text, offs)) == ["mixed"] * 3 + ["punct", "lower", "upper", "upper"]


def test_case_classes_empty_and_flat_equals_single():
    assert case_classes("", np.zeros((0, 2))).shape == (0,)
    texts = ["Ab", "CD", "ef", ""]
    feats = TokenFeatures(case=True)
    offs = np.array([[0, 2], [0, 2], [0, 2]])
    got = feats.compute(texts, offs, np.array([0, 1, 2, 3, 3]))["case_ids"]
    # texts touch in the joined string, but a word never crosses a text
    assert names(got) == ["title", "upper", "lower"]


@pytest.mark.skipif(default_bert_path() is None, reason="MiniLM package not installed")
def test_case_classes_with_wordpiece_offsets():
    fz = Featurizer(load_pretrained_tokenizer(default_bert_path()), max_length=128, cls_token="[CLS]", sep_token="[SEP]")
    texts = ["John Smith works for IBM in New York.", "", "état Über"]
    tokens = fz.tokenize_flat(texts)
    got = TokenFeatures(case=True).compute(texts, tokens.offsets, tokens.first)["case_ids"]
    assert len(got) == len(tokens.ids)
    first = names(got[: tokens.first[1]])
    pieces = [texts[0][a:b] for a, b in tokens.offsets[: tokens.first[1]]]
    assert dict(zip(pieces, first))["IBM"] == "upper"
    assert dict(zip(pieces, first))["John"] == "title"
    assert dict(zip(pieces, first))["works"] == "lower"
    assert first[-1] == "punct"
    assert names(got[tokens.first[2]:])[0] == "lower" and names(got[tokens.first[2]:])[-1] == "title"


def test_lexicon_matches_and_sets():
    lex = lexicon()
    texts = ["我是中国人"]
    offs = np.array([[i, i + 1] for i in range(5)])
    ids, w = lexicon_features(FlatText.of(texts), offs, np.array([0, 5]), lex, k=2)
    word = {w_: i + 1 for i, w_ in enumerate(lex.words)}
    # 中: B = {中国 (10), 中国人 (5)}
    assert ids[2, 0].tolist() == [word["中国"], word["中国人"]]
    # 国: M = {中国人}, E = {中国}, B = {国人}
    assert ids[3, 1, 0] == word["中国人"] and ids[3, 2, 0] == word["中国"] and ids[3, 0, 0] == word["国人"]
    # 人: E = {中国人 (5), 国人 (3)} top-2 by frequency, S = {人}
    assert ids[4, 2].tolist() == [word["中国人"], word["国人"]] and ids[4, 3, 0] == word["人"]
    assert np.allclose(w[4].sum(), 4.0) and np.all(w[ids == 0] == 0)
    assert ids[0].sum() == 0 and ids[1].sum() == 0  # 我, 是: no words


def test_lexicon_never_crosses_gaps_or_texts():
    lex = lexicon()
    texts = ["中国　人", "中", "国"]  # U+3000 between 国 and 人; 中|国 in two texts
    fz = char_featurizer(texts)
    tokens = fz.tokenize_flat(texts)
    assert tokens.offsets.tolist() == [[0, 1], [1, 2], [3, 4], [0, 1], [0, 1]]
    start, length, _ = lex.matches(FlatText.of(texts), tokens.offsets, tokens.first)
    spans = sorted(zip(start.tolist(), length.tolist()))
    assert spans == [(0, 2), (2, 1)]  # 中国 and 人 only


def test_bigrams_oov_end_marker_and_save(tmp_path):
    texts = ["中国人", "中国"]
    fz = char_featurizer(texts)
    t = fz.tokenize_flat(texts)
    vocab = BigramVocab.build(texts, t.offsets, t.first)
    assert len(vocab) == 2 + 4  # 中国 国人 人$ 国$
    other = ["中国𠀋", "　", "人"]
    t2 = fz.tokenize_flat(other)
    got = bigram_of(other, t2, vocab)
    assert got[0] == got_of(vocab, "中国") and got[1] == 1 and got[2] == 1 and got[3] > 1  # 国𠀋, 𠀋$ unseen; 人$ seen
    vocab.save(tmp_path / "b.npz")
    assert np.array_equal(BigramVocab.load(tmp_path / "b.npz").codes, vocab.codes)


def bigram_of(texts, tokens, vocab):
    return TokenFeatures(bigrams=vocab).compute(texts, tokens.offsets, tokens.first)["bigram_ids"]


def got_of(vocab, pair):
    return bigram_of([pair], type("T", (), {"offsets": np.array([[0, 1], [1, 2]]), "first": np.array([0, 2])}), vocab)[0]


def test_compute_is_independent_of_grouping():
    """The engine groups texts into units differently from training: same rows either way."""
    lex = lexicon()
    fz = char_featurizer(ZH)
    all_tokens = fz.tokenize_flat(ZH)
    feats = TokenFeatures(case=True, bigrams=BigramVocab.build(ZH, all_tokens.offsets, all_tokens.first), lexicon=lex)
    together = feats.compute(ZH, all_tokens.offsets, all_tokens.first)
    for k, text in enumerate(ZH):
        one = fz.tokenize_flat([text])
        alone = feats.compute([text], one.offsets, one.first)
        a, b = all_tokens.first[k], all_tokens.first[k + 1]
        for name in feats.input_names:
            assert np.array_equal(together[name][a:b], alone[name]), (name, text)


def test_empty_inputs():
    feats = TokenFeatures(case=True, bigrams=BigramVocab(np.zeros(0, np.int64)), lexicon=lexicon())
    out = feats.compute([], np.zeros((0, 2)), np.zeros(1, np.int64))
    assert out["case_ids"].shape == (0,) and out["lexicon_ids"].shape == (0, 4, 3)
    out = feats.compute(["", "　"], np.zeros((0, 2)), np.zeros(3, np.int64))
    assert out["bigram_ids"].shape == (0,) and out["lexicon_weights"].dtype == np.float32


def test_lexicon_save_load_and_collisions(tmp_path):
    lex = lexicon()
    lex.save(tmp_path / "lex.npz")
    back = Lexicon.load(tmp_path / "lex.npz")
    assert back.words == lex.words and np.array_equal(back.codes, lex.codes) and np.array_equal(back.freqs, lex.freqs)
    assert np.array_equal(word_codes(list(lex.words)), lex.codes)
    assert len(np.unique(lex.codes)) == len(lex.codes)
    sub = lex.subset(np.array([w in ("中国", "银行") for w in lex.words]))
    assert set(sub.words) == {"中国", "银行"} and len(sub) == 3


def test_jieba_dict_is_read_as_data():
    import sys

    try:
        path = jieba_dict_path()
    except FileNotFoundError:
        pytest.skip("jieba not installed")
    assert "jieba" not in sys.modules
    head = "\n".join(path.read_text(encoding="utf-8").splitlines()[:2000])
    lex = Lexicon.build((ln.split()[0], float(ln.split()[1])) for ln in head.splitlines())
    assert len(lex) > 1000


def test_scatter_rows_layout():
    vals = np.arange(5) + 10
    out = scatter_rows(vals, np.array([0, 3]), np.array([3, 2]), lead=1, width=5)
    assert out.tolist() == [[0, 10, 11, 12, 0], [0, 13, 14, 0, 0]]
    w = scatter_rows(np.ones((5, 4, 2), np.float32), np.array([0]), np.array([5]), lead=0, width=6)
    assert w.shape == (1, 6, 4, 2) and w[0, 5].sum() == 0


def test_long_text_is_vectorised():
    rng = np.random.default_rng(0)
    chars = np.array(list("中国人民银行北京欢迎你是我的"))
    text = "".join(rng.choice(chars, 300_000))
    fz = char_featurizer([text[:1000]])
    t = fz.tokenize_flat([text])
    feats = TokenFeatures(case=True, bigrams=BigramVocab.build([text[:1000]], t.offsets[:1000], np.array([0, 1000])),
                          lexicon=lexicon())
    started = time.perf_counter()
    out = feats.compute([text], t.offsets, t.first)
    assert time.perf_counter() - started < 5.0  # a Python loop per character would take far longer
    assert out["lexicon_ids"].shape == (300_000, 4, 3)
    assert (out["lexicon_ids"][:, 0] > 0).any()


def test_scatter_batches_matches_collate_flat_many():
    """The engine collates a unit's rows into many batches at once: extras follow the same layout."""
    from nere.engine.core.features import scatter_batches

    texts = ["中国人民银行", "北京", "欢迎你", "我", "是中国人"]
    fz = char_featurizer(texts)
    t = fz.tokenize_flat(texts)
    starts, counts = t.first[:-1], t.lengths
    batches = fz.collate_flat_many(t.ids, None, starts, counts, [2, 0, 3], [0, 0, 9])
    got = scatter_batches(t.ids, starts, counts, [2, 0, 3], [b.input_ids.shape[1] for b in batches], fz.lead,
                          fill=fz.pad_id)
    for b, g in zip(batches, got):
        assert np.array_equal(b.input_ids, g)
    feats = TokenFeatures(lexicon=lexicon()).compute(texts, t.offsets, t.first)
    lex = scatter_batches(feats["lexicon_ids"], starts, counts, [2, 0, 3], [b.input_ids.shape[1] for b in batches], 0)
    assert [x.shape for x in lex] == [(2, 6, 4, 3), (0, 0, 4, 3), (3, 9, 4, 3)]
