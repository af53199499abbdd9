"""NER model kinds: BiLSTM, BiLSTM-CRF, BERT-Softmax, BERT-CRF.

All four are encoder -> dropout -> linear emissions; the CRF kinds add pytorch-crf for
training. Decoding always goes through the engine's numpy Viterbi/argmax, so what is
evaluated here is what the exported bundle does.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torchcrf import CRF

from nere.engine.core.tags import TagSet
from nere.train.models.base import GraphSpec, NereModel
from nere.train.models.encoders import build_encoder
from nere.train.registry import register


class TokenTagger(NereModel):
    """Encoder + linear emissions (+ CRF when ``use_crf``)."""

    encoder_type = "bert"
    use_crf = False

    def __init__(self, config: dict[str, Any], pretrained_path: str | None = None) -> None:
        super().__init__(config)
        self.tagset = TagSet(config["tag_scheme"], tuple(config["entity_labels"]))
        n_tags = len(self.tagset.tags)
        self.encoder = build_encoder(config["encoder"], pretrained_path)
        self.dropout = nn.Dropout(config.get("dropout", 0.1))
        self.classifier = nn.Linear(self.encoder.hidden_size, n_tags)
        self.crf = CRF(n_tags, batch_first=True) if self.use_crf else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Emissions (B, T, tags): the stage-1 graph of an NER bundle."""
        return self.classifier(self.dropout(self.encoder(input_ids, attention_mask)))

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        emissions = self(batch["input_ids"], batch["attention_mask"])
        return self.tagging_loss(emissions, batch["tags"], batch["attention_mask"])

    def tagging_loss(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.crf is None:
            return nn.functional.cross_entropy(emissions.flatten(0, 1), tags.flatten(), ignore_index=-100)
        return -self.crf(emissions, tags.clamp(min=0), mask.bool(), reduction="mean")

    def crf_arrays(self) -> dict[str, np.ndarray] | None:
        """CRF parameters as numpy arrays (pytorch-crf's [from, to] convention)."""
        if self.crf is None:
            return None
        return {
            "transitions": self.crf.transitions.detach().cpu().float().numpy(),
            "start": self.crf.start_transitions.detach().cpu().float().numpy(),
            "end": self.crf.end_transitions.detach().cpu().float().numpy(),
        }

    def export_graphs(self) -> list[GraphSpec]:
        ids = torch.tensor([[2, 7, 8, 9, 3], [2, 7, 3, 0, 0]], dtype=torch.long)
        mask = (ids != 0).long()
        return [
            GraphSpec(
                name="ner",
                module=self,
                inputs=["input_ids", "attention_mask"],
                outputs=["emissions"],
                dummy=(ids, mask),
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "seq"},
                    "attention_mask": {0: "batch", 1: "seq"},
                    "emissions": {0: "batch", 1: "seq"},
                },
            )
        ]


@register("ner", "bilstm")
class BiLSTMSoftmax(TokenTagger):
    encoder_type, use_crf = "bilstm", False


@register("ner", "bilstm-crf")
class BiLSTMCRF(TokenTagger):
    encoder_type, use_crf = "bilstm", True


@register("ner", "bert-softmax")
class BertSoftmax(TokenTagger):
    encoder_type, use_crf = "bert", False


@register("ner", "bert-crf")
class BertCRF(TokenTagger):
    encoder_type, use_crf = "bert", True
