"""Small evaluation sets shipped inside the package: natural text written by the team.

They are scored beside the benchmarks to judge output as a user would see it (headings on
their own lines, full-width spaces in names, punctuation after names). Each file is a
whole ``test`` split in the JSON Lines format of ``jsonl.py``; there is no train or dev.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nere.engine.core import Example
from nere.train.datasets import jsonl
from nere.train.datasets.base import DatasetNotFoundError, LoadStats, check_split

EVAL_DIR = Path(__file__).resolve().parent / "eval"


@dataclass(frozen=True)
class PackagedSet:
    """A registry entry over one packaged ``.jsonl`` file (the ``test`` split)."""

    name: str
    file_name: str

    @property
    def path(self) -> Path:
        return EVAL_DIR / self.file_name

    def _check(self, split: str) -> None:
        if check_split(split) != "test":
            raise DatasetNotFoundError(
                f"dataset {self.name!r} is an evaluation set: it has only the 'test' split, not {split!r}"
            )

    def load(self, split: str, limit: int | None = None, data_dir: str | None = None) -> list[Example]:
        self._check(split)
        return jsonl.read_jsonl(self.path, limit)

    def stats(self, split: str, data_dir: str | None = None) -> LoadStats:
        self._check(split)
        examples = jsonl.read_jsonl(self.path)
        out = LoadStats(self.name, split)
        out.add("documents", len(examples))
        out.add("characters", sum(len(ex.text) for ex in examples))
        out.add("entities", sum(len(ex.entities) for ex in examples))
        out.add("relations", sum(len(ex.relations) for ex in examples))
        return out


ZH_JUDGMENTS = PackagedSet("zh-judgments", "zh_judgments.jsonl")
EN_NEWS = PackagedSet("en-news", "en_news.jsonl")
