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
from nere.train.models.encoders import BertEncoder, build_encoder, feature_embedding
from nere.train.registry import register


class TokenTagger(NereModel):
    """Encoder + linear emissions (+ CRF when ``use_crf``)."""

    encoder_type = "bert"
    use_crf = False

    def __init__(self, config: dict[str, Any], pretrained_path: str | None = None) -> None:
        super().__init__(config)
        self.tagset = TagSet(config["tag_scheme"], tuple(config["entity_labels"]))
        n_tags = len(self.tagset.tags)
        features = config.get("features")
        self.encoder = build_encoder(config["encoder"], pretrained_path, features)
        # a BERT reads the extra inputs beside its output; a BiLSTM beside its character embedding
        self.head_features = feature_embedding(features) if isinstance(self.encoder, BertEncoder) else None
        source = self.head_features if self.head_features is not None else getattr(self.encoder, "features", None)
        self.feature_names: list[str] = list(source.names) if source is not None else []
        self.dropout = nn.Dropout(config.get("dropout", 0.1))
        extra = self.head_features.out_dim if self.head_features is not None else 0
        self.classifier = nn.Linear(self.encoder.hidden_size + extra, n_tags)
        self.crf = CRF(n_tags, batch_first=True) if self.use_crf else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *extras: torch.Tensor) -> torch.Tensor:
        """Emissions (B, T, tags): the stage-1 graph of an NER bundle. ``extras`` are the
        inputs named by ``feature_names``, in that order."""
        if len(extras) != len(self.feature_names):
            raise ValueError(f"model takes extra inputs {self.feature_names}, got {len(extras)}")
        features = dict(zip(self.feature_names, extras))
        if self.head_features is not None:
            hidden = self.encoder(input_ids, attention_mask)
            hidden = torch.cat([hidden, self.head_features(features).to(hidden.dtype)], dim=-1)
        elif features:
            hidden = self.encoder(input_ids, attention_mask, features)
        else:
            hidden = self.encoder(input_ids, attention_mask)
        return self.classifier(self.dropout(hidden))

    def extra_inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """The batch's extra inputs in graph order (a missing one is a clear error)."""
        missing = [n for n in self.feature_names if n not in batch]
        if missing:
            raise ValueError(f"batch lacks the model's extra inputs {missing}")
        return tuple(batch[n] for n in self.feature_names)

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        emissions = self(batch["input_ids"], batch["attention_mask"], *self.extra_inputs(batch))
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
        extras = dummy_feature_inputs(self.config.get("features") or {}, self.feature_names, mask)
        axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                "emissions": {0: "batch", 1: "seq"}}
        axes.update({n: {0: "batch", 1: "seq"} for n in self.feature_names})
        return [
            GraphSpec(
                name="ner",
                module=self,
                inputs=["input_ids", "attention_mask", *self.feature_names],
                outputs=["emissions"],
                dummy=(ids, mask, *extras),
                dynamic_axes=axes,
            )
        ]


def dummy_feature_inputs(spec: dict[str, Any], names: list[str], mask: torch.Tensor) -> list[torch.Tensor]:
    """Export dummies of the extra inputs (zero at padding, like the featurizer's)."""
    g = torch.Generator().manual_seed(0)
    shape = tuple(mask.shape)
    out = []
    for name in names:
        if name == "case_ids":
            from nere.engine.core.features import N_CASE

            out.append(torch.randint(1, N_CASE, shape, generator=g) * mask)
        elif name == "bigram_ids":
            out.append(torch.randint(1, int(spec["bigrams"]["size"]), shape, generator=g) * mask)
        elif name == "lexicon_ids":
            k = int(spec["lexicon"]["k"])
            ids = torch.randint(0, int(spec["lexicon"]["size"]), shape + (4, k), generator=g)
            out.append(ids * mask[:, :, None, None])
        elif name == "lexicon_weights":
            out.append(torch.rand(shape + (4, int(spec["lexicon"]["k"])), generator=g) * mask[:, :, None, None])
        else:
            raise ValueError(f"no dummy for extra input {name!r}")
    return out


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
