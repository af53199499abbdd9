"""Examples -> relation-extraction batches: one encoding per sentence, a flat list of pairs.

Every ordered pair of distinct entities of a sentence is a candidate (core
``candidate_pairs``): gold relations carry their label, the rest ``no_relation``. A
batch holds B sentences (the stage-1 inputs) and P pairs pointing at them by
``pair_index``; the head/tail masks mark the entity's tokens at stage-1 positions
(``featurizer.lead`` shifts past [CLS]), which is the stage-2 graph contract of
docs/bundle-format.md. Training may keep only a sample of the negative pairs, drawn
anew each epoch; evaluation always uses every pair.

The candidate set (``CANDIDATE_SETS``) is one choice for training and evaluation alike:
``all`` is the above; ``annotated`` keeps only the pairs that carry a gold relation and
classifies them among the relation labels (no ``no_relation`` target or prediction), the
sentence-level setup of published SanWen results. It is stored in the model config
(``candidates``) so that evaluating a checkpoint uses the set it was trained on.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Collection, Sequence

import numpy as np
import torch

from nere.engine.core.featurize import Encoded, Featurizer, char_to_token_spans
from nere.engine.core.pairs import candidate_pairs
from nere.engine.core.types import NO_RELATION, Entity, Example, Relation

CANDIDATE_SETS = ("all", "annotated")


def check_candidates(candidates: str) -> str:
    if candidates not in CANDIDATE_SETS:
        raise ValueError(f"unknown candidate set {candidates!r}; choose one of {', '.join(CANDIDATE_SETS)}")
    return candidates


def candidates_of(model: Any) -> str:
    """The candidate set a model was trained on (``all`` for models saved before the option)."""
    return check_candidates(str(getattr(model, "config", {}).get("candidates", "all")))


def select_candidates(pairs: Sequence[tuple[int, int, str]], candidates: str) -> list[tuple[int, int, str]]:
    """The pairs of ``candidates``: every pair (``all``) or the gold-relation ones (``annotated``)."""
    if check_candidates(candidates) == "annotated":
        return [p for p in pairs if p[2] != NO_RELATION]
    return list(pairs)


def predicted_label_ids(probs: np.ndarray, candidates: str) -> np.ndarray:
    """Argmax label id per row; under ``annotated`` the ``no_relation`` column (0) is never chosen."""
    if check_candidates(candidates) == "annotated" and probs.shape[-1] > 1:
        return probs[:, 1:].argmax(axis=-1) + 1
    return probs.argmax(axis=-1)


@dataclass
class PairStats:
    """What pair building had to leave out, so reports can say it."""

    sentences: int = 0
    truncated: int = 0
    pairs: int = 0
    positive: int = 0
    misaligned_entities: int = 0  # an entity edge cuts a token (kept, widened to whole tokens)
    lost_entities: int = 0  # no token left (truncation): their pairs are predicted no_relation
    lost_pairs: int = 0
    lost_positive: int = 0
    unknown_types: int = 0  # entity labels unseen in training (mapped to type id 0)
    unknown_relations: int = 0  # gold relation labels unseen in training (scored, never predicted)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class PairSentence:
    """One sentence: its encoding, entity token spans and candidate pairs."""

    encoded: Encoded
    entities: list[Entity]
    token_spans: list[tuple[int, int] | None]  # content-token [start, end) per entity; None if lost
    type_ids: list[int]
    pairs: list[tuple[int, int, str]]  # (head, tail, gold label) over ``entities``
    label_ids: list[int]  # gold label id per pair (-1: label unknown to the model)
    usable: list[int] = field(default_factory=list)  # indices of pairs whose entities both have tokens


def pair_sentences(
    examples: Sequence[Example],
    featurizer: Featurizer,
    relation_labels: Sequence[str],
    entity_labels: Sequence[str],
    entities: Sequence[Sequence[Entity]] | None = None,
    type_pairs: Collection[tuple[str, str]] | None = None,
    candidates: str = "all",
) -> tuple[list[PairSentence], PairStats]:
    """Tokenize once and list candidate pairs of every example.

    ``entities`` replaces the gold entities (end-to-end evaluation on predicted ones;
    relations then come from matching gold triples, see ``relations_on``). ``type_pairs``
    filters candidates by (head type, tail type) as the engine does; ``candidates``
    picks the candidate set (``select_candidates``).
    """
    check_candidates(candidates)
    rel_id = {lab: i for i, lab in enumerate(relation_labels)}
    type_id = {lab: i for i, lab in enumerate(entity_labels)}
    stats = PairStats(sentences=len(examples))
    encoded = featurizer.tokenize([ex.text for ex in examples])
    out = []
    for k, (ex, enc) in enumerate(zip(examples, encoded)):
        enc, cut = featurizer.truncate(enc)
        stats.truncated += int(cut)
        ents = list(ex.entities) if entities is None else list(entities[k])
        rels = ex.relations if entities is None else relations_on(ex, ents)
        spans: list[tuple[int, int] | None] = []
        for e in ents:
            hit, bad = char_to_token_spans(enc.offsets, [(e.start, e.end, e.label)]) if len(enc.ids) else ([], 1)
            spans.append((hit[0][0], hit[0][1]) if hit else None)
            stats.misaligned_entities += int(bad and bool(hit))
            stats.lost_entities += int(not hit)
        tids = []
        for e in ents:
            stats.unknown_types += int(e.label not in type_id)
            tids.append(type_id.get(e.label, 0))
        pairs = select_candidates(candidate_pairs(ents, rels, type_pairs), candidates)
        labels = []
        for _, _, lab in pairs:
            stats.unknown_relations += int(lab not in rel_id)
            labels.append(rel_id.get(lab, -1))
        usable = [i for i, (h, t, _) in enumerate(pairs) if spans[h] is not None and spans[t] is not None]
        stats.pairs += len(pairs)
        stats.positive += sum(lab != NO_RELATION for *_, lab in pairs)
        stats.lost_pairs += len(pairs) - len(usable)
        lost = set(range(len(pairs))) - set(usable)
        stats.lost_positive += sum(pairs[i][2] != NO_RELATION for i in lost)
        out.append(PairSentence(enc, ents, spans, tids, pairs, labels, usable))
    return out, stats


def relations_on(example: Example, entities: Sequence[Entity]) -> list[Relation]:
    """Gold relations re-indexed onto ``entities`` (exact span+label matches only)."""
    index = {(e.start, e.end, e.label): i for i, e in enumerate(entities)}
    out = []
    for r in example.relations:
        h, t = example.entities[r.head], example.entities[r.tail]
        hi, ti = index.get((h.start, h.end, h.label)), index.get((t.start, t.end, t.label))
        if hi is not None and ti is not None:
            out.append(Relation(hi, ti, r.label))
    return out


def sample_pairs(sent: PairSentence, neg_ratio: float, rng: random.Random | None) -> list[int]:
    """Indices of the pairs to train on: every usable positive plus sampled negatives.

    ``neg_ratio`` <= 0 keeps every negative. Otherwise a sentence keeps at most
    ``ceil(neg_ratio * max(1, positives))`` negatives, so a sentence without relations
    still teaches ``no_relation`` with a few pairs.
    """
    usable = [i for i in sent.usable if sent.label_ids[i] >= 0]
    pos = [i for i in usable if sent.label_ids[i] != 0]
    neg = [i for i in usable if sent.label_ids[i] == 0]
    if neg_ratio > 0 and rng is not None:
        k = math.ceil(neg_ratio * max(1, len(pos)))
        if len(neg) > k:
            neg = sorted(rng.sample(neg, k))
    return sorted(pos + neg)


def collate_pairs(
    sents: Sequence[PairSentence], featurizer: Featurizer, chosen: Sequence[Sequence[int]] | None = None
) -> dict[str, Any]:
    """Padded stage-1 inputs for the sentences and stage-2 inputs for their pairs.

    ``chosen[i]`` lists the pair indices of sentence i to include (default: every usable
    pair). ``pair_ref`` keeps (sentence row, pair index) for mapping predictions back.
    """
    batch = featurizer.collate([s.encoded for s in sents])
    width = batch.input_ids.shape[1]
    lead = featurizer.lead
    rows, heads, tails, htype, ttype, labels, ref = [], [], [], [], [], [], []
    for r, s in enumerate(sents):
        for p in (s.usable if chosen is None else chosen[r]):
            h, t, _ = s.pairs[p]
            rows.append(r)
            heads.append(s.token_spans[h])
            tails.append(s.token_spans[t])
            htype.append(s.type_ids[h])
            ttype.append(s.type_ids[t])
            labels.append(s.label_ids[p])
            ref.append((r, p))
    n = len(rows)
    head_mask = np.zeros((n, width), dtype=np.float32)
    tail_mask = np.zeros((n, width), dtype=np.float32)
    for i in range(n):
        head_mask[i, lead + heads[i][0] : lead + heads[i][1]] = 1.0
        tail_mask[i, lead + tails[i][0] : lead + tails[i][1]] = 1.0
    return {
        "input_ids": torch.from_numpy(batch.input_ids),
        "attention_mask": torch.from_numpy(batch.attention_mask),
        "pair_index": torch.tensor(rows, dtype=torch.long),
        "head_mask": torch.from_numpy(head_mask),
        "tail_mask": torch.from_numpy(tail_mask),
        "head_type": torch.tensor(htype, dtype=torch.long),
        "tail_type": torch.tensor(ttype, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "pair_ref": ref,
        "batch": batch,
    }


def type_pairs_of(examples: Sequence[Example]) -> list[tuple[str, str]]:
    """(head type, tail type) pairs seen in gold relations: the engine's candidate filter."""
    seen = {(ex.entities[r.head].label, ex.entities[r.tail].label) for ex in examples for r in ex.relations}
    return sorted(seen)


def relation_labels_of(examples: Sequence[Example]) -> list[str]:
    """``no_relation`` first (index 0), then the gold labels sorted."""
    labels = sorted({r.label for ex in examples for r in ex.relations} - {NO_RELATION})
    return [NO_RELATION, *labels]
