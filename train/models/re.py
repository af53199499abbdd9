"""Relation-extraction kinds: classify a candidate pair (e1, e2) of one sentence.

Every kind is two stages, matching the bundle contract (docs/bundle-format.md):

- stage 1 ``forward_stage1(input_ids, attention_mask) -> hidden``: one encoding per
  sentence, whatever its number of pairs;
- stage 2 ``forward_stage2(hidden, pair_index, head_mask, tail_mask, head_type,
  tail_type) -> logits``: ``hidden[pair_index]`` is the pair's sentence, the masks mark
  e1's and e2's tokens.

Kinds:

- ``bert-multitask``: [CLS] + mask-mean-pooled e1 and e2 + the max-pooled context between
  them -> LayerNorm, Linear, GELU, concatenated with entity-type embeddings of head and
  tail -> linear; plus an auxiliary
  TransE margin loss on projected e1, e2 and relation embeddings (weight ``transe_weight``).
- ``bert-softmax``: the plain pooled-entity BERT classifier, [CLS] + e1 + e2 -> linear
  (no context, no type embeddings, no TransE): the multitask kind's ablation.
- ``bilstm``: BiLSTM states + position embeddings of each token's clipped distance to
  e1 and to e2 -> a per-token tanh layer -> max pooling -> linear (which also reads the
  mean states of e1 and e2).
- ``bilstm-att``: Zhou et al. (2016) attention BiLSTM: the same token features ->
  attention pooling (alpha = softmax(w^T tanh(H)), h* = tanh(H alpha)) -> linear (with
  e1's and e2's mean states, as for ``bilstm``).
- ``acnn``: Wang et al. (2016) multi-level attention CNN, simplified: position embeddings,
  input attention (each word's similarity to e1 and to e2) scaling each convolution window,
  relation-aware attention pooling, and a linear classifier.

Position embeddings are added after the shared encoder (not before it, as in the
papers), because the sentence is encoded once for all its pairs. The recurrent and
convolutional kinds put the attention mask in ``hidden`` so that stage 2 pools over real
tokens only (stage 2 gets no attention mask of its own), which keeps results independent
of the padding a batch adds.

What is linear in a token's features is computed once per sentence, in stage 1, not once
per pair: the recurrent kinds' per-token layer ``W [state; pos1; pos2]`` is ``W_s state``
(stage 1) plus ``W_p [pos1; pos2]`` (stage 2, 2 x pos_dim wide instead of the state
width), and ACNN's convolution of ``[word; pos1; pos2]`` windows is the convolution of the
words (stage 1) plus that of the positions (stage 2). ``hidden`` is therefore
``[states (H) | mask (1) | sentence part (S)]`` (``_MaskChannelModel.split_hidden``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from nere.train.models.base import GraphSpec, NereModel
from nere.train.models.encoders import build_encoder
from nere.train.registry import register

NEG_INF = -1e4  # masked scores: exp() underflows to 0 in fp32 and fp16 alike


# ---------------------------------------------------------------------------- helpers
def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` (P, T, H) over the positions where ``mask`` (P, T) is 1.

    The sum is a (P, 1, T) @ (P, T, H) product: no (P, T, H) temporary per pair.
    """
    total = (mask.unsqueeze(1) @ x).squeeze(1)
    return total / mask.sum(dim=1, keepdim=True).clamp(min=1.0)


def masked_softmax(scores: torch.Tensor, valid: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Softmax over ``dim`` ignoring positions where ``valid`` is 0 (exportable: no -inf)."""
    return torch.softmax(scores + (1.0 - valid) * NEG_INF, dim=dim)


def span_bounds(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last position of each row's span in a 0/1 mask (P, T), as (P, 1) longs.

    First = argmax of the mask (the first maximum); last = max of mask * position. Both
    are plain ONNX ops, so the graph derives positions from the masks it is given.
    """
    pos = torch.arange(mask.shape[1], device=mask.device, dtype=mask.dtype).unsqueeze(0)
    first = torch.argmax(mask, dim=1, keepdim=True)
    last = (mask * pos).max(dim=1, keepdim=True).values.long()
    return first, last


def relative_positions(mask: torch.Tensor, max_distance: int) -> torch.Tensor:
    """Each token's distance to the span of ``mask`` (0 inside), clipped, shifted to >= 0."""
    first, last = span_bounds(mask)
    pos = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
    dist = torch.where(pos < first, pos - first, torch.where(pos > last, pos - last, torch.zeros_like(pos)))
    return dist.clamp(-max_distance, max_distance) + max_distance


def between_mask(head_mask: torch.Tensor, tail_mask: torch.Tensor) -> torch.Tensor:
    """1.0 on the positions strictly between the two spans (P, T); all zero when they touch."""
    h_first, h_last = span_bounds(head_mask)
    t_first, t_last = span_bounds(tail_mask)
    left, right = torch.minimum(h_last, t_last), torch.maximum(h_first, t_first)
    pos = torch.arange(head_mask.shape[1], device=head_mask.device).unsqueeze(0)
    return ((pos > left) & (pos < right)).to(head_mask.dtype)


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max of ``x`` (P, T, H) over the positions where ``mask`` is 1; zeros for empty masks."""
    m = mask.unsqueeze(-1)
    pooled = (x * m + (1.0 - m) * NEG_INF).max(dim=1).values
    return pooled * (mask.sum(dim=1, keepdim=True) > 0).to(x.dtype)


def transe_distance(h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """TransE energy ||h + r - t||_2 per row: zero exactly when h + r = t."""
    return torch.linalg.vector_norm(h + r - t, dim=-1)


def transe_margin_loss(h: torch.Tensor, r_gold: torch.Tensor, r_corrupt: torch.Tensor, t: torch.Tensor,
                       margin: float) -> torch.Tensor:
    """Mean of relu(margin + d(h, r_gold, t) - d(h, r_corrupt, t)) over rows (0 with no rows)."""
    if h.shape[0] == 0:
        return h.sum() * 0.0
    return F.relu(margin + transe_distance(h, r_gold, t) - transe_distance(h, r_corrupt, t)).mean()


# ----------------------------------------------------------------------------- heads
class MultitaskRelationHead(nn.Module):
    """Pooled [CLS]/e1/e2/context features + entity-type embeddings -> relation logits; TransE aux.

    The context is the max-pooled states strictly between e1 and e2 (SpERT's localized
    context, Eberts & Ulges 2020): with one shared encoding per sentence, nothing else
    tells the head which words link the two entities. Shared by the ``bert-multitask``
    RE kind and the joint model.
    """

    def __init__(self, hidden_size: int, n_relations: int, n_types: int, type_dim: int = 32,
                 transe_dim: int = 64, margin: float = 1.0, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * hidden_size)
        self.ff = nn.Linear(4 * hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.type_embedding = nn.Embedding(max(1, n_types), type_dim)
        self.out = nn.Linear(hidden_size + 2 * type_dim, n_relations)
        self.transe_proj = nn.Linear(hidden_size, transe_dim)
        self.relation_embedding = nn.Embedding(n_relations, transe_dim)
        self.margin = margin
        self.n_relations = n_relations

    def forward(self, hidden: torch.Tensor, pair_index: torch.Tensor, head_mask: torch.Tensor,
                tail_mask: torch.Tensor, head_type: torch.Tensor, tail_type: torch.Tensor):
        """(logits (P, R), e1 (P, H), e2 (P, H))."""
        rows = hidden.index_select(0, pair_index)
        e1, e2 = masked_mean(rows, head_mask), masked_mean(rows, tail_mask)
        context = masked_max(rows, between_mask(head_mask, tail_mask))
        x = torch.cat([rows[:, 0], e1, e2, context], dim=-1)
        x = self.dropout(F.gelu(self.ff(self.norm(x))))
        x = torch.cat([x, self.type_embedding(head_type), self.type_embedding(tail_type)], dim=-1)
        return self.out(x), e1, e2

    def transe_loss(self, e1: torch.Tensor, e2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Margin loss over gold (non-negative) pairs against a random different relation."""
        keep = labels > 0
        h = F.normalize(self.transe_proj(e1[keep]), dim=-1)
        t = F.normalize(self.transe_proj(e2[keep]), dim=-1)
        gold = labels[keep]
        shift = torch.randint(1, max(2, self.n_relations), gold.shape, device=gold.device)
        corrupt = (gold + shift) % self.n_relations
        return transe_margin_loss(h, self.relation_embedding(gold), self.relation_embedding(corrupt), t, self.margin)


# ---------------------------------------------------------------------- base classes
class _Stage1(nn.Module):
    """What torch.onnx.export traces for stage 1."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # the exporter restores the wrapper's mode afterwards (on the whole tree): match the model's
        self.train(model.training)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *extras: torch.Tensor):
        return self.model.forward_stage1(input_ids, attention_mask, *extras)


class _Stage2(nn.Module):
    """What torch.onnx.export traces for stage 2."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # the exporter restores the wrapper's mode afterwards (on the whole tree): match the model's
        self.train(model.training)

    def forward(self, hidden, pair_index, head_mask, tail_mask, head_type, tail_type):
        return self.model.forward_stage2(hidden, pair_index, head_mask, tail_mask, head_type, tail_type)


STAGE2_INPUTS = ["hidden", "pair_index", "head_mask", "tail_mask", "head_type", "tail_type"]


def stage2_graph(model: nn.Module, hidden: torch.Tensor) -> GraphSpec:
    """The stage-2 GraphSpec of any two-stage model, with dummy pairs on ``hidden``."""
    width = hidden.shape[1]
    head = torch.zeros(3, width)
    tail = torch.zeros(3, width)
    head[0, 1], tail[0, 2:4], head[1, 2:4], tail[1, 1], head[2, 1], tail[2, 2] = 1, 1, 1, 1, 1, 1
    n_types = max(1, len(model.config["entity_labels"]))
    dummy = (hidden, torch.tensor([0, 0, 1]), head, tail,
             torch.tensor([0, n_types - 1, 0]), torch.tensor([n_types - 1, 0, 0]))
    return GraphSpec(
        name="re", module=_Stage2(model), inputs=list(STAGE2_INPUTS), outputs=["logits"], dummy=dummy,
        dynamic_axes={"hidden": {0: "batch", 1: "seq"}, "pair_index": {0: "pairs"},
                      "head_mask": {0: "pairs", 1: "seq"}, "tail_mask": {0: "pairs", 1: "seq"},
                      "head_type": {0: "pairs"}, "tail_type": {0: "pairs"}, "logits": {0: "pairs"}},
    )


def dummy_ids(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two padded rows of small token ids that exist in any vocabulary."""
    top = max(5, vocab_size - 1)
    ids = torch.tensor([[2, 7, 8, 9, 3], [2, 7, 3, 0, 0]], dtype=torch.long).clamp(max=top)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.long)
    return ids, mask


class PairClassifier(NereModel):
    """Base of the RE kinds: an encoder (stage 1), a pair classifier (stage 2), CE loss."""

    encoder_type = "bert"

    def __init__(self, config: dict[str, Any], pretrained_path: str | None = None) -> None:
        super().__init__(config)
        self.relation_labels: list[str] = list(config["relation_labels"])
        self.entity_labels: list[str] = list(config["entity_labels"])
        self.head_config: dict[str, Any] = dict(config.get("head") or {})
        self.encoder = self.build_encoder(config, pretrained_path)

    @classmethod
    def fresh_head(cls, head: dict[str, Any]) -> dict[str, Any]:
        """The head config of a model about to be trained (what ``__init__`` of a loaded
        checkpoint may check for; see ACNN)."""
        return head

    # -- stage 1 -------------------------------------------------------------------
    def build_encoder(self, config: dict[str, Any], pretrained_path: str | None) -> nn.Module:
        return build_encoder(config["encoder"], pretrained_path)

    @property
    def stage1_size(self) -> int:
        """Width of ``hidden`` as stage 1 outputs it."""
        return int(self.encoder.hidden_size)

    def forward_stage1(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids, attention_mask)

    # -- stage 2 -------------------------------------------------------------------
    def stage2(self, hidden, pair_index, head_mask, tail_mask, head_type, tail_type) -> tuple[torch.Tensor, dict]:
        """(logits, extras for auxiliary losses)."""
        raise NotImplementedError

    def forward_stage2(self, hidden, pair_index, head_mask, tail_mask, head_type, tail_type) -> torch.Tensor:
        return self.stage2(hidden, pair_index, head_mask, tail_mask, head_type, tail_type)[0]

    def forward(self, input_ids, attention_mask, pair_index, head_mask, tail_mask, head_type, tail_type):
        hidden = self.forward_stage1(input_ids, attention_mask)
        return self.forward_stage2(hidden, pair_index, head_mask, tail_mask, head_type, tail_type)

    def pair_logits(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        hidden = self.forward_stage1(batch["input_ids"], batch["attention_mask"])
        return self.stage2(hidden, batch["pair_index"], batch["head_mask"], batch["tail_mask"],
                           batch["head_type"], batch["tail_type"])

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        logits, extras = self.pair_logits(batch)
        return F.cross_entropy(logits, batch["labels"], ignore_index=-1) + self.aux_loss(extras, batch["labels"])

    def aux_loss(self, extras: dict, labels: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), device=labels.device)

    # -- export --------------------------------------------------------------------
    def export_graphs(self) -> list[GraphSpec]:
        vocab = int(self.config["encoder"].get("vocab_size") or self.config["encoder"].get("hf_config", {}).get("vocab_size", 100))
        ids, mask = dummy_ids(vocab)
        with torch.no_grad():
            hidden = self.forward_stage1(ids, mask).detach()
        stage1 = GraphSpec(
            name="ner", module=_Stage1(self), inputs=["input_ids", "attention_mask"], outputs=["hidden"],
            dummy=(ids, mask),
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                          "hidden": {0: "batch", 1: "seq"}},
        )
        return [stage1, stage2_graph(self, hidden)]


# --------------------------------------------------------------------------- BERT kinds
@register("re", "bert-multitask")
class BertMultitask(PairClassifier):
    """BERT + MultitaskRelationHead (pooled entities, type embeddings, TransE)."""

    def __init__(self, config: dict[str, Any], pretrained_path: str | None = None) -> None:
        super().__init__(config, pretrained_path)
        h = self.head_config
        self.head = MultitaskRelationHead(
            self.encoder.hidden_size, len(self.relation_labels), len(self.entity_labels),
            type_dim=h.get("type_dim", 32), transe_dim=h.get("transe_dim", 64), margin=h.get("margin", 1.0),
            dropout=config.get("dropout", 0.1))
        self.transe_weight = float(h.get("transe_weight", 0.5))

    def stage2(self, hidden, pair_index, head_mask, tail_mask, head_type, tail_type):
        logits, e1, e2 = self.head(hidden, pair_index, head_mask, tail_mask, head_type, tail_type)
        return logits, {"e1": e1, "e2": e2}

    def aux_loss(self, extras: dict, labels: torch.Tensor) -> torch.Tensor:
        if self.transe_weight == 0:
            return torch.zeros((), device=labels.device)
        return self.transe_weight * self.head.transe_loss(extras["e1"], extras["e2"], labels)


@register("re", "bert-softmax")
class BertSoftmaxRE(PairClassifier):
    """The plain BERT relation classifier: [CLS] + mean-pooled e1 + e2 -> dropout -> linear."""

    def __init__(self, config: dict[str, Any], pretrained_path: str | None = None) -> None:
        super().__init__(config, pretrained_path)
        self.dropout = nn.Dropout(config.get("dropout", 0.1))
        self.out = nn.Linear(3 * self.encoder.hidden_size, len(self.relation_labels))

    def stage2(self, hidden, pair_index, head_mask, tail_mask, head_type, tail_type):
        rows = hidden.index_select(0, pair_index)
        x = torch.cat([rows[:, 0], masked_mean(rows, head_mask), masked_mean(rows, tail_mask)], dim=-1)
        return self.out(self.dropout(x)), {}


# ------------------------------------------------------------------ recurrent / CNN kinds
def same_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """1-D convolution of ``x`` (N, T, F) with ``weight`` (C, F, K), K odd, zero 'same' padding: (N, T, C).

    Equals ``F.conv1d(x.transpose(1, 2), weight, bias, padding=K // 2).transpose(1, 2)``,
    computed as one MatMul over the K shifted copies of ``x`` laid side by side: no layout
    transposes around the convolution (in onnxruntime they cost a third of it), and a
    MatMul is what int8 dynamic quantization handles.
    """
    channels, features, k = weight.shape
    pad = k // 2
    steps = x.shape[1]
    padded = F.pad(x, (0, 0, pad, pad))
    windows = torch.cat([padded[:, j:j + steps] for j in range(k)], dim=-1)  # block j = x[t + j - pad]
    out = windows @ weight.permute(2, 1, 0).reshape(k * features, channels)
    return out if bias is None else out + bias


class _MaskChannelModel(PairClassifier):
    """Recurrent and convolutional RE kinds: stage 1 outputs ``[states | mask | sentence part]``
    (module docstring), stage 2 adds position embeddings of each token's distances to e1 and e2."""

    encoder_type = "bilstm"

    def __init__(self, config: dict[str, Any], pretrained_path: str | None = None) -> None:
        super().__init__(config, pretrained_path)
        h = self.head_config
        self.max_distance = int(h.get("max_distance", 30))
        pos_dim = int(h.get("pos_dim", 16))
        self.pos1 = nn.Embedding(2 * self.max_distance + 1, pos_dim)
        self.pos2 = nn.Embedding(2 * self.max_distance + 1, pos_dim)
        self.dropout = nn.Dropout(config.get("dropout", 0.3))
        self.feature_size = self.encoder.hidden_size + 2 * pos_dim

    @property
    def sentence_part_size(self) -> int:
        """Width S of the per-sentence part of ``hidden``."""
        raise NotImplementedError

    def sentence_part(self, states: torch.Tensor) -> torch.Tensor:
        """The pair-independent, linear part of the per-token features (B, T, S), from masked states."""
        raise NotImplementedError

    @property
    def stage1_size(self) -> int:
        return int(self.encoder.hidden_size) + 1 + self.sentence_part_size

    def forward_stage1(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        m = attention_mask.unsqueeze(-1).to(torch.float32)
        states = self.encoder(input_ids, attention_mask) * m
        return torch.cat([states, m, self.mask_part(self.sentence_part(states), m)], dim=-1)

    def mask_part(self, part: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """What the sentence part holds at padding (``m`` 0); as computed by default."""
        return part

    def split_hidden(self, hidden: torch.Tensor, pair_index: torch.Tensor):
        """(states (P, T, H), valid (P, T), sentence part (P, T, S)) of each pair's sentence.

        Sliced per sentence, then gathered per pair: no (P, T, H + 1 + S) copy to split.
        """
        h = int(self.encoder.hidden_size)
        states = hidden[..., :h].index_select(0, pair_index)
        valid = hidden[..., h].index_select(0, pair_index)
        part = hidden[..., h + 1:].index_select(0, pair_index)
        return states, valid, part

    def positions(self, head_mask: torch.Tensor, tail_mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """[pos1; pos2] embeddings of each token's clipped distance to e1 and e2, zero on padding: (P, T, 2 pos_dim)."""
        p1 = self.pos1(relative_positions(head_mask, self.max_distance))
        p2 = self.pos2(relative_positions(tail_mask, self.max_distance))
        return torch.cat([p1, p2], dim=-1) * valid.unsqueeze(-1)


class _MixedTokens(_MaskChannelModel):
    """Recurrent kinds: positions join the states in a per-token layer, else max pooling
    would pool states and positions separately (pair-blind states).

    ``mixed = tanh(W [dropout(state); dropout(pos1; pos2)] + b)``, with ``W``'s state columns
    and ``b`` applied in stage 1. In training, the states' dropout mask is drawn per sentence
    (shared by its pairs) rather than per pair; evaluation is the same function. Stage 1
    puts NEG_INF in the sentence part at padding, so the mixed features there are
    tanh(NEG_INF + ...) = -1, the least a tanh gives: max pooling over every position is
    max pooling over the real tokens (a real token at -1 gives the same maximum), and
    attention gives padding weight 0 by the mask; no per-pair masking pass is spent.
    """

    def __init__(self, config: dict[str, Any], pretrained_path: str | None = None) -> None:
        super().__init__(config, pretrained_path)
        self.mix_size = int(self.head_config.get("mix_size", self.encoder.hidden_size))
        self.mix = nn.Linear(self.feature_size, self.mix_size)

    @property
    def sentence_part_size(self) -> int:
        return self.mix_size

    def sentence_part(self, states: torch.Tensor) -> torch.Tensor:
        return self.dropout(states) @ self.mix.weight[:, :self.encoder.hidden_size].t() + self.mix.bias

    def mask_part(self, part: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return part + (1.0 - m) * NEG_INF  # per sentence, once: see the class docstring

    def token_features(self, hidden, pair_index, head_mask, tail_mask):
        """(mixed token features (P, T, mix_size), -1 on padding; valid (P, T)).

        Only the valid channel and the sentence part are gathered per pair: the states
        serve only e1's and e2's means (:meth:`entity_means`)."""
        h = int(self.encoder.hidden_size)
        valid = hidden[..., h].index_select(0, pair_index)
        part = hidden[..., h + 1:].index_select(0, pair_index)
        pos = self.dropout(self.positions(head_mask, tail_mask, valid))
        return torch.tanh(part + pos @ self.mix.weight[:, h:].t()), valid

    def entity_means(self, hidden, pair_index, head_mask, tail_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """e1's and e2's mean states (P, H) from running sums of each sentence's states,
        (B, T + 1, H), instead of a (P, T, H) copy of the states per pair: a mask marks one
        contiguous span (every pair's does), so its sum is the difference of two running
        sums at its first token (:func:`span_bounds`) and past its last. Lengths in int64
        (exact under the fp16 export too; the running sum stays float32 there)."""
        h = int(self.encoder.hidden_size)
        states = hidden[..., :h]  # zero on padding (stage 1 masks them)
        sums = torch.cat([torch.zeros_like(states[:, :1]), states.cumsum(dim=1)], dim=1).reshape(-1, h)
        base = pair_index * (states.shape[1] + 1)

        def mean(mask: torch.Tensor) -> torch.Tensor:
            first = span_bounds(mask)[0].squeeze(1)
            n = mask.to(torch.int64).sum(dim=1)  # no marked token: n = 0, the mean 0
            total = sums.index_select(0, base + first + n) - sums.index_select(0, base + first)
            return total / n.clamp(min=1).unsqueeze(-1).to(total.dtype)

        return mean(head_mask), mean(tail_mask)

    def with_entity_means(self, pooled, hidden, pair_index, head_mask, tail_mask) -> torch.Tensor:
        """[pooled; mean state of e1; mean state of e2]: says which pair this is outright."""
        return torch.cat([pooled, *self.entity_means(hidden, pair_index, head_mask, tail_mask)], dim=-1)


@register("re", "bilstm")
class BiLSTMRE(_MixedTokens):
    """BiLSTM states + position embeddings -> tanh layer -> max pooling over real tokens,
    with e1's and e2's mean states -> linear."""

    def __init__(self, config: dict[str, Any], pretrained_path: str | None = None) -> None:
        super().__init__(config, pretrained_path)
        self.out = nn.Linear(self.mix_size + 2 * self.encoder.hidden_size, len(self.relation_labels))

    def stage2(self, hidden, pair_index, head_mask, tail_mask, head_type, tail_type):
        x, valid = self.token_features(hidden, pair_index, head_mask, tail_mask)
        pooled = x.max(dim=1).values  # padding holds -1, no more than any real token (class docstring)
        return self.out(self.dropout(self.with_entity_means(pooled, hidden, pair_index, head_mask, tail_mask))), {}


@register("re", "bilstm-att")
class BiLSTMAttentionRE(_MixedTokens):
    """Zhou et al. 2016 on H = the mixed token features: alpha = softmax(w^T tanh(H)),
    r = H alpha, h* = tanh(r) -> linear."""

    def __init__(self, config: dict[str, Any], pretrained_path: str | None = None) -> None:
        super().__init__(config, pretrained_path)
        self.att = nn.Linear(self.mix_size, 1, bias=False)
        self.out = nn.Linear(self.mix_size + 2 * self.encoder.hidden_size, len(self.relation_labels))

    def stage2(self, hidden, pair_index, head_mask, tail_mask, head_type, tail_type):
        x, valid = self.token_features(hidden, pair_index, head_mask, tail_mask)
        alpha = masked_softmax(self.att(torch.tanh(x)).squeeze(-1), valid)
        r = torch.tanh((x * alpha.unsqueeze(-1)).sum(dim=1))
        return self.out(self.dropout(self.with_entity_means(r, hidden, pair_index, head_mask, tail_mask))), \
            {"attention": alpha}


class EmbeddingEncoder(nn.Module):
    """ACNN's encoder: the word-embedding lookup (+ dropout in training)."""

    def __init__(self, vocab_size: int, embedding_dim: int = 128, dropout: float = 0.3, pad_id: int = 0,
                 **_: Any) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.hidden_size = embedding_dim

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.embedding(input_ids))


@register("re", "acnn")
class ACNN(_MaskChannelModel):
    """Wang et al. 2016, simplified: input attention on e1/e2, convolution, attention pooling.

    Input attention: alpha_j = softmax_i(w_i . e_j / sqrt(d)) for j in (e1, e2), e_j the mean
    embedding of the entity. As in the paper, it scales each convolution window z_i (the
    words and positions around token i): r_i = tanh(s_i W z_i + b), s_i = n (alpha_1 +
    alpha_2) / 2 (n = sentence length, so uniform attention leaves the window unchanged).
    Since s_i multiplies a whole window, W z_i splits into the words' convolution (stage 1,
    once per sentence) and the positions' (stage 2, 2 x pos_dim channels). Pooling
    attention (the paper's second level): G = R U W_L scores every position for every
    relation embedding, softmax over positions, pool, max over relations. The classifier
    reads the pooled features with e1's and e2's mean embeddings (a linear softmax layer in
    place of the paper's distance-based objective).
    """

    @classmethod
    def fresh_head(cls, head: dict[str, Any]) -> dict[str, Any]:
        return {**head, "input_attention": "window"}

    def build_encoder(self, config: dict[str, Any], pretrained_path: str | None) -> nn.Module:
        spec = dict(config["encoder"])
        if spec.pop("type") != "embedding":
            raise ValueError("acnn needs an 'embedding' encoder spec")
        return EmbeddingEncoder(**spec)

    def __init__(self, config: dict[str, Any], pretrained_path: str | None = None) -> None:
        super().__init__(config, pretrained_path)
        h = self.head_config
        if h.get("input_attention") != "window":
            raise ValueError("this ACNN checkpoint was trained with the earlier per-word input attention, which "
                             "ACNN no longer computes (it scales convolution windows now): retrain it")
        channels, rel_dim, kernel = int(h.get("channels", 200)), int(h.get("rel_dim", 64)), int(h.get("kernel", 3))
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"acnn: head.kernel must be odd (a window centred on each token), got {kernel}")
        self.conv = nn.Conv1d(self.feature_size, channels, kernel, padding=kernel // 2)  # holds W (C, F, K) and b
        self.U = nn.Linear(channels, rel_dim, bias=False)
        self.relation_embedding = nn.Parameter(torch.randn(rel_dim, len(self.relation_labels)) / rel_dim**0.5)
        self.out = nn.Linear(channels + 2 * self.encoder.hidden_size, len(self.relation_labels))

    @property
    def sentence_part_size(self) -> int:
        return int(self.conv.out_channels)

    def sentence_part(self, states: torch.Tensor) -> torch.Tensor:
        return same_conv(states, self.conv.weight[:, :self.encoder.hidden_size])

    def stage2(self, hidden, pair_index, head_mask, tail_mask, head_type, tail_type):
        words, valid, conv_words = self.split_hidden(hidden, pair_index)
        e1, e2 = masked_mean(words, head_mask), masked_mean(words, tail_mask)
        scale = words.shape[-1] ** -0.5  # scaled dot products: raw ones saturate the softmax
        alpha = masked_softmax((words @ torch.stack([e1, e2], dim=-1)) * scale, valid.unsqueeze(-1))  # (P, T, 2)
        window_scale = valid.sum(dim=1, keepdim=True) * alpha.sum(dim=-1) / 2  # (P, T), 0 on padding
        conv_pos = same_conv(self.positions(head_mask, tail_mask, valid), self.conv.weight[:, self.encoder.hidden_size:])
        r = torch.tanh((conv_words + conv_pos) * window_scale.unsqueeze(-1) + self.conv.bias)  # (P, T, C)
        g = r @ (self.U.weight.t() @ self.relation_embedding)  # (P, T, R): R U W_L with U W_L multiplied once
        att = masked_softmax(g, valid.unsqueeze(-1), dim=1)  # 0 on padding, so r there never counts
        pooled = (att.transpose(1, 2) @ r).max(dim=1).values  # (P, R, C) -> (P, C); att^T is the small side
        return self.out(self.dropout(torch.cat([pooled, e1, e2], dim=-1))), {"input_attention": (alpha[..., 0], alpha[..., 1])}
