"""Joint NER + RE: one BERT encoder, a CRF tagger and the multitask relation head.

The NER side *is* the ``bert-crf`` TokenTagger (same tag set, emissions layer, CRF and
loss), so NER prediction and evaluation (``ner_task.predict_ner``) work on this model
unchanged; the RE side is ``MultitaskRelationHead`` from models/re.py on the same
hidden states. Stage 1 outputs (emissions, hidden); stage 2 is the RE stage 2.

Loss = a*ner + b*re + c*transe with fixed (a, b, c), or, with ``learned_weights``,
homoscedastic uncertainty weighting (Kendall et al. 2018): learnable log-variances s_i
and loss = sum_i exp(-s_i) L_i + s_i; ``task_weights()`` reports exp(-s_i).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from nere.train.models.base import GraphSpec
from nere.train.models.ner import BertCRF, dummy_feature_inputs
from nere.train.models.re import MultitaskRelationHead, _Stage1, dummy_ids, stage2_graph
from nere.train.registry import register

LOSSES = ("ner", "re", "transe")
LOG_VAR_SCALE = 10.0


@register("joint", "bert-crf-multitask")
class JointBertCrfMultitask(BertCRF):
    """BERT-CRF tagger + multitask relation head over one encoding."""

    def __init__(self, config: dict[str, Any], pretrained_path: str | None = None) -> None:
        super().__init__(config, pretrained_path)
        self.relation_labels: list[str] = list(config["relation_labels"])
        self.entity_labels: list[str] = list(config["entity_labels"])
        h = dict(config.get("head") or {})
        self.re_head = MultitaskRelationHead(
            self.encoder.hidden_size, len(self.relation_labels), len(self.entity_labels),
            type_dim=h.get("type_dim", 32), transe_dim=h.get("transe_dim", 64), margin=h.get("margin", 1.0),
            dropout=config.get("dropout", 0.1))
        w = config.get("weights") or {}
        self.fixed_weights = {k: float(w.get(k, 1.0)) for k in LOSSES}
        self.learned = bool(config.get("learned_weights", False))
        # log-variances s_i = LOG_VAR_SCALE * log_vars (trained only with learned weights; kept
        # otherwise so checkpoints share a layout). Adam moves a parameter by ~lr per step
        # whatever its gradient, so at the head rate (1e-3) a plain s_i would drift < 1 in a
        # few hundred steps; the scale lets the weights settle (s_i -> log L_i) within a run.
        self.log_vars = nn.Parameter(torch.zeros(len(LOSSES)), requires_grad=self.learned)
        self.last_losses: dict[str, float] = {}

    # -- graphs --------------------------------------------------------------------
    def forward_stage1(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *extras: torch.Tensor):
        """(emissions (B, T, tags), hidden (B, T, H)). ``extras``: the tagger's extra inputs
        (``feature_names``); without them a model that has some returns emissions None, as
        relation classification on given entities needs ``hidden`` only."""
        hidden = self.encoder(input_ids, attention_mask)
        if len(extras) != len(self.feature_names):
            if extras:
                raise ValueError(f"model takes extra inputs {self.feature_names}, got {len(extras)}")
            return None, hidden
        tagger_in = hidden
        if self.head_features is not None:
            features = self.head_features(dict(zip(self.feature_names, extras))).to(hidden.dtype)
            tagger_in = torch.cat([hidden, features], dim=-1)
        return self.classifier(self.dropout(tagger_in)), hidden

    def forward_stage2(self, hidden, pair_index, head_mask, tail_mask, head_type, tail_type) -> torch.Tensor:
        return self.re_head(hidden, pair_index, head_mask, tail_mask, head_type, tail_type)[0]

    # -- training ------------------------------------------------------------------
    def task_weights(self) -> dict[str, float]:
        """The weights the loss applies now: fixed (a, b, c) or learned exp(-s_i)."""
        if self.learned:
            return {k: float(v) for k, v in zip(LOSSES, torch.exp(-self.log_variances().detach()).tolist())}
        return dict(self.fixed_weights)

    def log_variances(self) -> torch.Tensor:
        """s_i of the uncertainty weighting."""
        return LOG_VAR_SCALE * self.log_vars

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        emissions, hidden = self.forward_stage1(batch["input_ids"], batch["attention_mask"], *self.extra_inputs(batch))
        parts = {"ner": self.tagging_loss(emissions, batch["tags"], batch["attention_mask"])}
        if batch["pair_index"].numel():
            logits, e1, e2 = self.re_head(hidden, batch["pair_index"], batch["head_mask"], batch["tail_mask"],
                                          batch["head_type"], batch["tail_type"])
            parts["re"] = F.cross_entropy(logits, batch["labels"], ignore_index=-1)
            parts["transe"] = self.re_head.transe_loss(e1, e2, batch["labels"])
        else:  # a batch of sentences without entity pairs trains NER only
            parts["re"] = parts["transe"] = hidden.sum() * 0.0
        self.last_losses = {k: float(v.detach()) for k, v in parts.items()}
        if self.learned:
            return sum(torch.exp(-s) * parts[k] + s for k, s in zip(LOSSES, self.log_variances()))
        return sum(self.fixed_weights[k] * parts[k] for k in LOSSES if self.fixed_weights[k] != 0)

    # -- export --------------------------------------------------------------------
    def export_graphs(self) -> list[GraphSpec]:
        ids, mask = dummy_ids(int(self.config["encoder"].get("hf_config", {}).get("vocab_size", 100)))
        extras = dummy_feature_inputs(self.config.get("features") or {}, self.feature_names, mask)
        with torch.no_grad():
            _, hidden = self.forward_stage1(ids, mask, *extras)
        axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                "emissions": {0: "batch", 1: "seq"}, "hidden": {0: "batch", 1: "seq"}}
        axes.update({n: {0: "batch", 1: "seq"} for n in self.feature_names})
        stage1 = GraphSpec(
            name="ner", module=_Stage1(self), inputs=["input_ids", "attention_mask", *self.feature_names],
            outputs=["emissions", "hidden"], dummy=(ids, mask, *extras), dynamic_axes=axes,
        )
        return [stage1, stage2_graph(self, hidden.detach())]
