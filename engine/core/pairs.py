"""Candidate entity pairs for relation extraction, shared by training and the engine."""
from __future__ import annotations

from typing import Collection, Sequence

from nere.engine.core.types import NO_RELATION, Entity, Relation


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
    for i, h in enumerate(entities):
        for j, t in enumerate(entities):
            if i == j:
                continue
            label = gold.get((i, j), NO_RELATION)
            if type_pairs is not None and label == NO_RELATION and (h.label, t.label) not in type_pairs:
                continue
            out.append((i, j, label))
    return out
