"""Sentence encoders: a local Hugging Face BERT (pretrained or random) and a BiLSTM.

Both map (input_ids, attention_mask) -> hidden states (B, T, H) and are batch-invariant:
a sentence's states do not depend on the padding added for longer neighbours, so the
engine's length-sorted batches give the same results as training's batches.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

# A small BERT for languages without a local pretrained model (Chinese here).
SMALL_BERT = {
    "model_type": "bert",
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
}


class BertEncoder(nn.Module):
    """Any Hugging Face encoder (BERT family) run with eager attention (exports cleanly)."""

    def __init__(self, hf_config: dict[str, Any], pretrained_path: str | None = None) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # the unused pooler of sentence encoders is expected
        if pretrained_path:
            self.bert = AutoModel.from_pretrained(
                pretrained_path, attn_implementation="eager", add_pooling_layer=False
            )
        else:
            cfg = dict(hf_config)
            model_type = cfg.pop("model_type", "bert")
            config = AutoConfig.for_model(model_type, **cfg)
            config._attn_implementation = "eager"
            self.bert = AutoModel.from_config(config, add_pooling_layer=False)
        self.hidden_size = int(self.bert.config.hidden_size)

    def hf_config(self) -> dict[str, Any]:
        """What rebuilds this architecture (weights come from model.safetensors)."""
        d = self.bert.config.to_dict()
        keep = {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool, type(None), list))}
        keep["model_type"] = self.bert.config.model_type
        return keep

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence's first ``length`` steps, leaving padding in place.

    Built from arange/where/gather so it exports to ONNX with dynamic shapes.
    """
    time = x.shape[1]
    t = torch.arange(time, device=x.device).unsqueeze(0)  # (1, T)
    lens = lengths.unsqueeze(1)
    idx = torch.where(t < lens, lens - 1 - t, t)  # (B, T)
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))


class TokenFeatureEmbedding(nn.Module):
    """Embeds the extra per-token inputs of nere.engine.core.features into one vector per
    token: case class, bigram and SoftLexicon embeddings, concatenated in that order.

    ``spec`` is the ``features`` entry of a model config (TokenFeatures.config() plus the
    embedding sizes); ``names`` lists the inputs it reads, in graph-input order.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        from nere.engine.core.features import N_CASE

        self.names: list[str] = []
        self.out_dim = 0
        self.case = self.bigram = self.lexicon = None
        if spec.get("case"):
            dim = int(spec.get("case_dim", 16))
            self.case = nn.Embedding(N_CASE, dim, padding_idx=0)
            self.names.append("case_ids")
            self.out_dim += dim
        if spec.get("bigrams"):
            b = spec["bigrams"]
            self.bigram = nn.Embedding(int(b["size"]), int(b.get("dim", 64)), padding_idx=0)
            self.names.append("bigram_ids")
            self.out_dim += self.bigram.embedding_dim
        if spec.get("lexicon"):
            lx = spec["lexicon"]
            self.lexicon = nn.Embedding(int(lx["size"]), int(lx.get("dim", 50)), padding_idx=0)
            self.names += ["lexicon_ids", "lexicon_weights"]
            self.out_dim += 4 * self.lexicon.embedding_dim

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        if self.case is not None:
            parts.append(self.case(features["case_ids"]))
        if self.bigram is not None:
            parts.append(self.bigram(features["bigram_ids"]))
        if self.lexicon is not None:
            ids, w = features["lexicon_ids"], features["lexicon_weights"]  # (B, T, 4, k)
            sets = (self.lexicon(ids) * w.unsqueeze(-1).to(self.lexicon.weight.dtype)).sum(dim=3)  # (B, T, 4, D)
            parts.append(sets.flatten(2))
        return torch.cat(parts, dim=-1)


def feature_embedding(spec: dict[str, Any] | None) -> TokenFeatureEmbedding | None:
    """The embedding of a config's ``features`` entry, or None when it asks for none."""
    if not spec:
        return None
    emb = TokenFeatureEmbedding(spec)
    return emb if emb.names else None


class BiLSTMEncoder(nn.Module):
    """Embedding + bidirectional LSTM, padding-invariant without packed sequences.

    The backward direction runs a forward LSTM over each sequence reversed within its
    length, so padding never flows into real positions (packing does not export well);
    its half of the output is zero at padding. The export turns that pair of reversals
    into the backward LSTM's own reverse direction over the sequence lengths
    (``nere.export.lstm_graph``), which gives the same values, zeros at padding included.
    """

    def __init__(self, vocab_size: int, embedding_dim: int = 128, hidden_size: int = 128,
                 num_layers: int = 1, dropout: float = 0.3, pad_id: int = 0,
                 features: TokenFeatureEmbedding | None = None) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.features = features  # extra per-token inputs, concatenated to the character embedding
        in_dim = embedding_dim + (features.out_dim if features is not None else 0)
        self.fwd = nn.LSTM(in_dim, hidden_size, num_layers, batch_first=True)
        self.bwd = nn.LSTM(in_dim, hidden_size, num_layers, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.hidden_size = 2 * hidden_size

    def embed(self, input_ids: torch.Tensor, features: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.embedding(input_ids)
        if self.features is not None:
            x = torch.cat([x, self.features(features or {})], dim=-1)
        return self.dropout(x)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                features: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.embed(input_ids, features)
        lengths = attention_mask.sum(dim=1)
        f, _ = self.fwd(x)
        b, _ = self.bwd(reverse_within_length(x, lengths))
        b = reverse_within_length(b, lengths) * attention_mask.unsqueeze(-1).to(b.dtype)
        return self.dropout(torch.cat([f, b], dim=-1))


def build_encoder(spec: dict[str, Any], pretrained_path: str | None = None,
                  features: dict[str, Any] | None = None) -> nn.Module:
    """Encoder from its config entry: {"type": "bert", "hf_config": {...}} or {"type": "bilstm", ...}.

    ``features`` (a config's ``features`` entry) feeds a BiLSTM's input; a BERT encoder
    ignores it (its model adds the features to the encoder's output)."""
    kind = spec["type"]
    if kind == "bert":
        return BertEncoder(spec.get("hf_config", SMALL_BERT), pretrained_path)
    if kind == "bilstm":
        args = {k: v for k, v in spec.items() if k != "type"}
        return BiLSTMEncoder(**args, features=feature_embedding(features))
    raise ValueError(f"unknown encoder type {kind!r}")


def encoder_spec(encoder: nn.Module, spec: dict[str, Any]) -> dict[str, Any]:
    """The spec to save in config.json (a pretrained BERT's architecture, not its path)."""
    if isinstance(encoder, BertEncoder):
        return {"type": "bert", "hf_config": encoder.hf_config()}
    return dict(spec)
