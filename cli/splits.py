"""Dataset splits for the commands: the loaders' errors (unknown name, missing folder, bad
line) become one-line click errors. Torch-free, like the loaders."""
from __future__ import annotations

from typing import Sequence

import click

from nere.engine.core.types import Example


def load_splits(dataset: str, data_dir: str | None, limit: int | None,
                splits: Sequence[str] = ("train", "dev")) -> list[list[Example]]:
    from nere.train.datasets import load_dataset

    try:
        return [load_dataset(dataset, s, limit=limit, data_dir=data_dir) for s in splits]
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err)) from err
