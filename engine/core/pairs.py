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


def type_pair_table(type_pairs: Collection[tuple[str, str]] | None, type_ids: dict[str, int]) -> np.ndarray | None:
    """``type_pairs`` as a (head type id, tail type id) bool table; None (every pair) stays None."""
    if type_pairs is None:
        return None
    table = np.zeros((len(type_ids), len(type_ids)), dtype=bool)
    for a, b in type_pairs:
        table[type_ids[a], type_ids[b]] = True
    return table


def grouped_pairs(keys: np.ndarray, types: np.ndarray, table: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`candidate_pairs` (without gold labels) of many groups at once, as arrays: the
    entities come grouped by ``keys`` (contiguous runs: a sentence, a model row), ``types``
    are their type ids (-1: untyped, never paired), ``table`` from :func:`type_pair_table`.
    Returns the (head, tail) entity indices of every ordered pair of two typed entities of
    one group that the table allows, in (group, head, tail) order."""
    typed = np.flatnonzero(np.asarray(types) >= 0)
    key = np.asarray(keys)[typed]
    first = np.flatnonzero(np.diff(key, prepend=-1) != 0)  # each group's first typed entity
    sizes = np.diff(np.append(first, len(key)))
    first, sizes = first[sizes >= 2], sizes[sizes >= 2]
    group, i, j = ordered_pairs(sizes)
    head, tail = typed[first[group] + i], typed[first[group] + j]
    if table is not None and len(head):
        ok = table[types[head], types[tail]]
        head, tail = head[ok], tail[ok]
    return head, tail


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
