"""Evaluate a checkpoint of any task: the task's evaluator is looked up, not branched on."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from nere.engine.core.types import Example
from nere.train.checkpoint import load_checkpoint

# task -> evaluate(model, featurizer, examples) -> {section: metrics}
EVALUATORS: dict[str, Callable[..., dict[str, Any]]] = {}


def register_evaluator(task: str):
    def deco(fn):
        EVALUATORS[task] = fn
        return fn

    return deco


@register_evaluator("ner")
def _ner(model, featurizer, examples: Sequence[Example]) -> dict[str, Any]:
    from nere.train.ner_task import evaluate_ner

    return {"ner": evaluate_ner(model, featurizer, examples)}


def evaluate_checkpoint(path: str | Path, examples: Sequence[Example]) -> dict[str, Any]:
    model, featurizer, config = load_checkpoint(path)
    task = config["task"]
    if task not in EVALUATORS:
        # task modules register themselves on import
        import importlib

        importlib.import_module(f"nere.train.{task}_task")
    return EVALUATORS[task](model, featurizer, examples)
