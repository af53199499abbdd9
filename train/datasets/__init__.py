"""Dataset loaders: every one returns ``list[nere.engine.core.Example]``.

``load_dataset(name_or_path, split)`` takes a registry name (see ``DATASETS``) or a path
to the user's own JSON Lines data (a ``.jsonl`` file, or a folder with
``train.jsonl``/``dev.jsonl``/``test.jsonl``). Parsing is cached in-process, so loading
a split twice is cheap; callers get fresh Example objects each time.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from nere.engine.core import Example
from nere.train.datasets import conll04, jsonl, msra, sanwen
from nere.train.datasets.base import (
    ENV_VAR,
    SPLITS,
    DatasetFormatError,
    DatasetNotFoundError,
    LoadStats,
    check_split,
    dataset_root,
)
from nere.train.datasets.jsonl import read_jsonl, write_jsonl
from nere.train.datasets.policy import flat_entities

Loader = Callable[..., list[Example]]  # (split, limit=None, data_dir=None) -> examples

# name -> module (or object) with load(split, limit, data_dir) and stats(split, data_dir)
_MODULES = {
    "conll04": conll04,
    "conll04-prose": conll04.prose,  # the same sentences as running text (see conll04.py)
    "msra": msra,
    "sanwen": sanwen,
    "chinese_literature": sanwen,  # alias: the dataset's own name
}
DATASETS: dict[str, Loader] = {name: mod.load for name, mod in _MODULES.items()}


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"unknown dataset {name!r}; known names: {', '.join(sorted(DATASETS))} "
        "(or a path to a .jsonl file or a folder of {train,dev,test}.jsonl)"
    )


def load_dataset(
    name_or_path: str | os.PathLike,
    split: str,
    limit: int | None = None,
    data_dir: str | None = None,
) -> list[Example]:
    """Examples of ``split`` ("train", "dev" or "test"); ``limit`` keeps the first N."""
    check_split(split)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    key = str(name_or_path)
    if key in DATASETS:
        return DATASETS[key](split, limit=limit, data_dir=data_dir)
    if _looks_like_path(key):
        return jsonl.load(key, split, limit)
    raise _unknown(key)


def _looks_like_path(key: str) -> bool:
    return key.endswith(".jsonl") or os.sep in key or "/" in key or Path(key).exists()


def load_stats(name: str, split: str, data_dir: str | None = None) -> LoadStats:
    """What loading ``name``/``split`` read, kept and skipped (parses the split if needed)."""
    check_split(split)
    if name not in _MODULES:
        raise _unknown(name)
    return _MODULES[name].stats(split, data_dir=data_dir)


__all__ = [
    "DATASETS",
    "ENV_VAR",
    "SPLITS",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "LoadStats",
    "dataset_root",
    "flat_entities",
    "load_dataset",
    "load_stats",
    "read_jsonl",
    "write_jsonl",
]
