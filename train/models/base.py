"""What every model kind shares: its config, build from config, and export description."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass
class GraphSpec:
    """One ONNX graph to export (optimum-exporter style): module, IO names, axes, dummies."""

    name: str  # file stem: "ner" (stage 1) or "re" (stage 2)
    module: nn.Module
    inputs: list[str]
    outputs: list[str]
    dummy: tuple[torch.Tensor, ...]
    dynamic_axes: dict[str, dict[int, str]]
    atol: float = 1e-4  # max abs difference tolerated vs PyTorch in fp32
    extra: dict[str, Any] = field(default_factory=dict)


class NereModel(nn.Module):
    """Base of all model kinds. ``config`` is JSON-serialisable and rebuilds the model."""

    task: str = ""
    kind: str = ""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        # extra per-token inputs (nere.engine.core.features.TokenFeatures) and their data;
        # set when built for training, or read from the checkpoint folder by load_extras
        self.input_features = None

    def save_extras(self, folder: str | Path) -> None:
        """Write the data files the model's featurization needs beside its weights."""
        if self.input_features:
            self.input_features.save(folder)

    def load_extras(self, folder: str | Path) -> None:
        """Read what :meth:`save_extras` wrote (named by ``config["features"]``)."""
        if self.config.get("features"):
            from nere.engine.core.features import TokenFeatures

            self.input_features = TokenFeatures.load(self.config["features"], folder)

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def export_graphs(self) -> list[GraphSpec]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
