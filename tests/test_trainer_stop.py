"""The shared training loop: per-part dev F1 in the history, and SIGTERM keeps the best epoch."""
from __future__ import annotations

import os
import signal

import torch

from nere.train.trainer import TrainConfig, fit, part_scores


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Linear(2, 1)

    def loss(self, batch):
        return ((self.w(batch["x"]) - batch["y"]) ** 2).mean()


def _batches(rng):
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    return [{"x": x, "y": torch.tensor([[1.0], [2.0]])}]


def test_part_scores_keeps_only_f1_parts():
    metrics = {"ner": {"f1": 0.5, "precision": 1.0}, "re": {"f1": 0.25}, "e2e_f1": 0.1, "weights": {"ner": 1.0}}
    assert part_scores(metrics) == {"ner": 0.5, "re": 0.25}


def test_sigterm_stops_and_keeps_best_epoch():
    calls = []

    def evaluate(model):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return {"score": [0.0, 0.9, 0.5][len(calls) - 1], "ner": {"f1": 0.1 * len(calls)}}

    before = signal.getsignal(signal.SIGTERM)
    model = Tiny()
    result = fit(model, _batches, evaluate, "score", TrainConfig(epochs=10, patience=10, progress=False, log_epochs=False))
    assert result["stopped"] is True
    assert result["best_epoch"] == 2
    assert [h["dev_parts"]["ner"] for h in result["history"]] == [0.1, 0.2]
    assert signal.getsignal(signal.SIGTERM) == before
