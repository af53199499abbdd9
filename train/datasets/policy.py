"""Entity policies for featurization: flat tag sequences cannot hold nested spans.

SanWen keeps nested/overlapping entities in ``Example.entities`` because relation
extraction needs them; a flat NER tagger needs one entity per character.
"""
from __future__ import annotations

from typing import Sequence

from nere.engine.core import Entity


def flat_entities(entities: Sequence[Entity]) -> tuple[list[Entity], int]:
    """Non-overlapping subset: longest span first, then earliest start; (kept, dropped).

    Longest-first keeps the outer mention of a nest ("他的墓地" over "他"), which is the
    usual choice for flat NER on nested data. Ties (same length) go to the earlier
    start, then label order, so the result is deterministic. ``kept`` is in (start, end)
    order; indices into the input list are NOT preserved (relations must not use them).
    """
    kept: list[Entity] = []
    taken: list[tuple[int, int]] = []
    for ent in sorted(entities, key=lambda e: (-(e.end - e.start), e.start, e.label)):
        if all(ent.end <= s or ent.start >= e for s, e in taken):
            kept.append(ent)
            taken.append((ent.start, ent.end))
    kept.sort()
    return kept, len(entities) - len(kept)
