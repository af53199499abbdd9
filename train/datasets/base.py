"""Shared pieces of the dataset loaders: splits, folder resolution, load statistics.

Kept apart from ``__init__`` so that every loader can import it without a cycle.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from nere.engine.core import Example

SPLITS: tuple[str, ...] = ("train", "dev", "test")
ENV_VAR = "NERE_DATASETS"

# registry name -> folder name under the datasets root
FOLDERS: dict[str, str] = {
    "conll04": "conll04",
    "sanwen": "chinese_literature_ner_re",
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder or file is missing; the message says where we looked and how to fix it."""


class DatasetFormatError(ValueError):
    """A data file is malformed; the message names file:line and the problem."""


@dataclass
class LoadStats:
    """What a loader read, kept and skipped (so that data problems are visible, not silent)."""

    dataset: str
    split: str
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def __getitem__(self, key: str) -> int:
        return self.counts.get(key, 0)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def _default_roots() -> list[Path]:
    """Fallback roots: beside the repository checkout, then beside the working directory."""
    repo_root = Path(__file__).resolve().parents[2]  # train/datasets/base.py -> repo root
    return [repo_root.parent / "shared" / "datasets", Path.cwd().parent / "shared" / "datasets"]


def dataset_root(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding dataset ``name``.

    Order: ``data_dir`` (a folder holding ``conll04/`` etc., or the dataset folder itself)
    > ``$NERE_DATASETS`` > ``<repo>/../shared/datasets`` > ``./../shared/datasets``.
    The first root that is given (or, for the fallbacks, that exists) decides; a missing
    dataset folder raises DatasetNotFoundError naming the folder and the variable.
    """
    folder = FOLDERS.get(name, name)
    if data_dir is not None:
        root = Path(data_dir)
        candidates = [root / folder] + ([root] if root.name == folder else [])
        source = "data_dir argument"
    elif os.environ.get(ENV_VAR):
        root = Path(os.environ[ENV_VAR])
        candidates = [root / folder]
        source = f"${ENV_VAR}"
    else:
        candidates = [r / folder for r in _default_roots()]
        source = "default locations"
    for c in candidates:
        if c.is_dir():
            return c
    raise DatasetNotFoundError(
        f"dataset {name!r}: folder {candidates[0]} not found (from the {source}); "
        f"pass data_dir or set {ENV_VAR} to a folder holding {folder}/"
    )


def copy_examples(examples: list[Example] | tuple[Example, ...], limit: int | None) -> list[Example]:
    """Fresh Example objects over cached ones (entities/relations are frozen; the lists are not)."""
    chosen = examples if limit is None else examples[: max(limit, 0)]
    return [Example(e.text, list(e.entities), list(e.relations), e.id) for e in chosen]
