"""Candidate entity pairs for relation extraction."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nere.engine.core.pairs import candidate_pairs
from nere.engine.core.types import NO_RELATION, Entity, Example, Relation

TYPES = ["PER", "ORG", "LOC"]


@st.composite
def sentences(draw):
    n = draw(st.integers(0, 7))
    ents = [Entity(2 * i, 2 * i + 1, draw(st.sampled_from(TYPES))) for i in range(n)]
    rels = []
    if n >= 2:
        heads_tails = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=6))
        seen = set()
        for h, t in heads_tails:
            if h != t and (h, t) not in seen:
                seen.add((h, t))
                rels.append(Relation(h, t, draw(st.sampled_from(["Work_For", "Live_In", "Kill"]))))
    return ents, rels


@settings(max_examples=200, deadline=None)
@given(sent=sentences())
def test_every_ordered_pair_with_gold_labels(sent):
    ents, rels = sent
    pairs = candidate_pairs(ents, rels)
    n = len(ents)
    assert len(pairs) == n * (n - 1)
    assert {(h, t) for h, t, _ in pairs} == {(i, j) for i in range(n) for j in range(n) if i != j}
    gold = {(r.head, r.tail): r.label for r in rels}
    for h, t, label in pairs:
        assert label == gold.get((h, t), NO_RELATION)
    assert sum(label != NO_RELATION for *_, label in pairs) == len(rels)


@settings(max_examples=200, deadline=None)
@given(sent=sentences(), allowed=st.sets(st.tuples(st.sampled_from(TYPES), st.sampled_from(TYPES))))
def test_type_pairs_filter_keeps_gold(sent, allowed):
    ents, rels = sent
    everything = candidate_pairs(ents, rels)
    kept = candidate_pairs(ents, rels, type_pairs=allowed)
    assert set(kept) <= set(everything)
    gold = {(r.head, r.tail, r.label) for r in rels}
    assert gold <= set(kept)  # never drops a gold pair, whatever its types
    for h, t, label in set(everything) - set(kept):
        assert label == NO_RELATION and (ents[h].label, ents[t].label) not in allowed
    for h, t, label in kept:
        assert label != NO_RELATION or (ents[h].label, ents[t].label) in allowed
    assert [p for p in everything if p in set(kept)] == kept  # same order as unfiltered


def test_directions_are_distinct():
    ents = [Entity(0, 3, "PER"), Entity(10, 14, "ORG"), Entity(20, 25, "LOC")]
    rels = [Relation(0, 1, "Work_For")]
    pairs = candidate_pairs(ents, rels)
    assert pairs == [
        (0, 1, "Work_For"), (0, 2, NO_RELATION),
        (1, 0, NO_RELATION), (1, 2, NO_RELATION),
        (2, 0, NO_RELATION), (2, 1, NO_RELATION),
    ]
    # the reverse direction of a gold relation is a negative
    assert (1, 0, NO_RELATION) in pairs
    only = candidate_pairs(ents, rels, type_pairs={("ORG", "LOC")})
    assert only == [(0, 1, "Work_For"), (1, 2, NO_RELATION)]
    assert candidate_pairs(ents, rels, type_pairs=set()) == [(0, 1, "Work_For")]


def test_small_inputs():
    assert candidate_pairs([]) == []
    assert candidate_pairs([Entity(0, 1, "PER")]) == []
    assert candidate_pairs([Entity(0, 1, "PER"), Entity(2, 3, "PER")]) == [(0, 1, NO_RELATION), (1, 0, NO_RELATION)]


def test_example_validate_and_triples():
    """The data model the pairs come from (engine/core/types.py)."""
    ex = Example("Ann works at Acme", [Entity(0, 3, "PER"), Entity(13, 17, "ORG")], [Relation(0, 1, "Work_For")])
    ex.validate()
    assert ex.triples() == {((0, 3, "PER"), (13, 17, "ORG"), "Work_For")}
    with pytest.raises(ValueError, match="invalid entity span"):
        Entity(3, 3, "PER")
    with pytest.raises(ValueError, match="ends beyond text of length 3"):
        Example("Ann", [Entity(0, 4, "PER")]).validate()
    with pytest.raises(ValueError, match="refers to a missing entity"):
        Example("Ann", [Entity(0, 3, "PER")], [Relation(0, 1, "Kill")]).validate()


def test_grouped_pairs_equal_candidate_pairs_of_each_group():
    """The engine's array form lists, for many groups at once, exactly what candidate_pairs
    lists group by group (untyped entities skipped, type_pairs applied, same order)."""
    import random

    import numpy as np

    from nere.engine.core.pairs import grouped_pairs, type_pair_table

    labels = ["PER", "ORG", "LOC", "MISC"]  # MISC: not a type of the relation stage
    type_ids = {"PER": 0, "ORG": 1, "LOC": 2}
    rng = random.Random(5)
    for allowed in (None, {("PER", "ORG"), ("ORG", "LOC"), ("PER", "PER")}, set()):
        table = type_pair_table(allowed, type_ids)
        for _ in range(30):
            groups = [[rng.choice(labels) for _ in range(rng.randint(0, 5))] for _ in range(rng.randint(0, 6))]
            keys = np.array([g for g, ents in enumerate(groups) for _ in ents], dtype=np.int64)
            flat = [lab for ents in groups for lab in ents]
            types = np.array([type_ids.get(lab, -1) for lab in flat], dtype=np.int64)
            want = []
            base = 0
            for ents in groups:
                typed = [k for k, lab in enumerate(ents) if lab in type_ids]
                sub = [Entity(k, k + 1, ents[k]) for k in typed]
                want += [(base + typed[i], base + typed[j]) for i, j, _ in candidate_pairs(sub, type_pairs=allowed)]
                base += len(ents)
            head, tail = grouped_pairs(keys, types, table)
            assert list(zip(head.tolist(), tail.tolist())) == want
