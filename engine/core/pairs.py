"""Candidate entity pairs for relation extraction, shared by training and the engine."""
from __future__ import annotations

from typing import Collection, Sequence

import numpy as np

from nere.engine.core.featurize import expand_ranges
from nere.engine.core.types import NO_RELATION, Entity, Relation


def ordered_pairs(sizes: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ordered pair (i, j), i != j, of each group of ``sizes[g]`` entities, flat and
    in (group, i, j) order: the (group, i, j) arrays. The one enumeration of candidate
    pairs: :func:`candidate_pairs` lists one sentence's, the engine a unit's at once."""
    sizes = np.asarray(sizes, dtype=np.int64)
    group, cell = expand_ranges(np.zeros(len(sizes), dtype=np.int64), sizes * sizes)
    k = sizes[group]
    i, j = cell // k, cell % k
    keep = i != j
    return group[keep], i[keep], j[keep]


def candidate_pairs(
    entities: Sequence[Entity],
    relations: Sequence[Relation] = (),
    type_pairs: Collection[tuple[str, str]] | None = None,
) -> list[tuple[int, int, str]]:
    """Every ordered pair (head, tail) of distinct entities with its gold label.

    Pairs that carry a gold relation get its label, the others ``no_relation``. When
    ``type_pairs`` is given (the (head type, tail type) pairs seen in training), pairs
    of other types are left out, except gold ones, which are always kept so that
    evaluation never silently loses a gold relation.
    """
    gold = {(r.head, r.tail): r.label for r in relations}
    out = []
    _, heads, tails = ordered_pairs([len(entities)])
    for i, j in zip(heads.tolist(), tails.tolist()):
        label = gold.get((i, j), NO_RELATION)
        if type_pairs is not None and label == NO_RELATION and (entities[i].label, entities[j].label) not in type_pairs:
            continue
        out.append((i, j, label))
    return out
