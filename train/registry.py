"""A registry of model kinds, chosen by (task, name), AllenNLP-`Registrable` style.

Each kind is an ``nn.Module`` subclass that knows how to build itself from a config,
compute its loss, predict, and describe its ONNX graphs; the CLI and the exporter look
kinds up here instead of branching on names.
"""
from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")

TASKS = ("ner", "re", "joint")
_MODELS: dict[tuple[str, str], type] = {}


def register(task: str, name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a model kind available as ``nere train <task> --model <name>``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks are {', '.join(TASKS)}")

    def deco(cls: type[T]) -> type[T]:
        key = (task, name)
        if key in _MODELS and _MODELS[key] is not cls:
            raise ValueError(f"model name clash: {task}/{name} is already {_MODELS[key].__qualname__}")
        _MODELS[key] = cls
        cls.task = task  # type: ignore[attr-defined]
        cls.kind = name  # type: ignore[attr-defined]
        return cls

    return deco


def _load_builtin() -> None:
    """Import the built-in model modules; their @register decorators fill the registry."""
    import importlib
    import importlib.util

    for module in ("nere.train.models.ner", "nere.train.models.re", "nere.train.models.joint"):
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


def model_names(task: str) -> list[str]:
    _load_builtin()
    return sorted(name for t, name in _MODELS if t == task)


def get_model_class(task: str, name: str) -> type:
    """The registered class, or a ValueError listing the names that exist."""
    _load_builtin()
    try:
        return _MODELS[(task, name)]
    except KeyError:
        known = ", ".join(model_names(task)) or "none"
        raise ValueError(f"unknown {task} model {name!r}; known: {known}") from None
