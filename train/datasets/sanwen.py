"""SanWen / Chinese Literature NER+RE (Xu et al. 2017): brat documents -> sentence Examples.

Source: ``chinese_literature_ner_re/relation_extraction/{Training,Validation,Testing}``.
Policies (documented in docs/datasets.md, counted in ``stats(split)``):
- entity labels are the coarse tags (the part before the hyphen: Person-Pronoun -> Person);
- a mention whose ``text[start:end]`` differs from its surface is skipped (mismatch), so
  is every discontinuous mention; mentions with the same span and coarse label merge;
  a document whose offsets are shifted (many mismatches, see MISALIGNED_*) is dropped;
- documents are split with nere.engine.core.sentences (。！？!? + closing quotes; not ；;
  newlines stay inside sentences); offsets become sentence-relative;
- entities are kept when they lie inside one sentence, relations when both mentions do;
  nested/overlapping entities are all kept (see policy.flat_entities for flat NER);
- ``R`` lines labelled Coreference (2 in Training/0.ann) are not relations: skipped;
  self-relations (both arguments merge into one entity) and duplicates are dropped.
"""
from __future__ import annotations

import bisect
from functools import lru_cache
from pathlib import Path

from nere.engine.core import Entity, Example, Relation
from nere.engine.core.sentences import sentence_spans
from nere.train.datasets.base import (
    DatasetNotFoundError,
    LoadStats,
    check_split,
    copy_examples,
    dataset_root,
)
from nere.train.datasets.brat import parse_ann

NAME = "sanwen"
SPLIT_FOLDERS = {"train": "Training", "dev": "Validation", "test": "Testing"}
SKIPPED_RELATION_LABELS = frozenset({"Coreference"})
# A document is dropped as misaligned when at least MISALIGNED_MIN of its continuous
# mentions, and more than MISALIGNED_RATE of them, differ from the text. Measured: the 8
# shifted Training documents have 28-87% mismatches, every other document <= 2%.
MISALIGNED_MIN = 5
MISALIGNED_RATE = 0.2


def coarse(label: str) -> str:
    return label.split("-", 1)[0]


def _read(path: Path) -> str:
    with open(path, encoding="utf-8", newline="") as f:  # keep offsets: no newline translation
        return f.read()


def document_examples(text: str, ann_raw: str, doc_id: str, stats: LoadStats) -> list[Example]:
    """One brat document -> one Example per sentence (see module docstring)."""
    ann = parse_ann(ann_raw)
    stats.add("documents")
    stats.add("characters", len(text))
    stats.add("malformed_records", len(ann.malformed))

    # mention id -> entity key (start, end, coarse label), after checks and merging
    local = LoadStats(NAME, stats.split)
    key_of: dict[str, tuple[int, int, str]] = {}
    keys: set[tuple[int, int, str]] = set()
    for m in ann.mentions:
        local.add("mentions")
        if len(m.fragments) != 1:
            local.add("mentions_discontinuous")
            continue
        s, e = m.fragments[0]
        if not (0 <= s < e <= len(text)) or text[s:e] != m.surface:
            local.add("mentions_mismatch")
            continue
        key = (s, e, coarse(m.label))
        if key in keys:
            local.add("mentions_merged_duplicate")
        keys.add(key)
        key_of[m.id] = key

    continuous = local["mentions"] - local["mentions_discontinuous"]
    if local["mentions_mismatch"] >= MISALIGNED_MIN and local["mentions_mismatch"] > MISALIGNED_RATE * continuous:
        # shifted offsets: the kept mentions would leave most entities of its sentences
        # unlabelled, which teaches a tagger to miss them. Drop the whole document.
        stats.add("documents_dropped_misaligned")
        stats.add("mentions_in_dropped_documents", len(ann.mentions))
        stats.add("relations_in_dropped_documents", len(ann.relations))
        return []
    for key, n in local.counts.items():
        stats.add(key, n)
    stats.add("coreference_groups", ann.coreference_groups)

    sents = sentence_spans(text)
    starts = [s for s, _ in sents]

    def sentence_of(s: int, e: int) -> int:
        i = bisect.bisect_right(starts, s) - 1
        return i if i >= 0 and e <= sents[i][1] else -1

    per_sent: list[list[tuple[int, int, str]]] = [[] for _ in sents]
    where: dict[tuple[int, int, str], int] = {}
    for key in sorted(keys):
        i = sentence_of(key[0], key[1])
        if i < 0:
            stats.add("mentions_crossing_sentences")
            continue
        where[key] = i
        per_sent[i].append(key)

    index = {key: per_sent[where[key]].index(key) for key in where}  # lists are sorted
    rels: list[set[tuple[int, int, str]]] = [set() for _ in sents]
    for r in ann.relations:
        stats.add("relations")
        if r.label in SKIPPED_RELATION_LABELS:
            stats.add("relations_coreference_skipped")
            continue
        h, t = key_of.get(r.arg1), key_of.get(r.arg2)
        if h is None or t is None:
            stats.add("relations_mention_skipped")
            continue
        if h == t:
            stats.add("relations_self")
            continue
        if h not in where or t not in where or where[h] != where[t]:
            stats.add("relations_crossing_sentences")
            continue
        triple = (index[h], index[t], r.label)
        if triple in rels[where[h]]:
            stats.add("relations_duplicate")
            continue
        rels[where[h]].add(triple)

    out = []
    for i, ((s0, e0), ents) in enumerate(zip(sents, per_sent)):
        entities = [Entity(s - s0, e - s0, lab) for s, e, lab in ents]
        relations = [Relation(h, t, lab) for h, t, lab in sorted(rels[i])]
        out.append(Example(text[s0:e0], entities, relations, id=f"{doc_id}#{i}"))
        stats.add("sentences")
        stats.add("entities", len(entities))
        stats.add("relations_kept", len(relations))
        if any(a.end > b.start for a, b in zip(entities, entities[1:])):
            stats.add("sentences_with_overlapping_entities")
    return out


def _doc_order(path: Path) -> tuple[int, str]:
    return (int(path.stem), path.stem) if path.stem.isdigit() else (1 << 62, path.stem)


@lru_cache(maxsize=8)
def _parse(folder: str, split: str) -> tuple[tuple[Example, ...], LoadStats]:
    stats = LoadStats(NAME, split)
    out: list[Example] = []
    for txt in sorted(Path(folder).glob("*.txt"), key=_doc_order):
        ann = txt.with_suffix(".ann")
        ann_raw = _read(ann) if ann.is_file() else ""
        if not ann.is_file():
            stats.add("documents_without_ann")
        doc_id = f"{NAME}/{SPLIT_FOLDERS[split]}/{txt.stem}"
        out.extend(document_examples(_read(txt), ann_raw, doc_id, stats))
    return tuple(out), stats


def _folder(split: str, data_dir: str | None) -> str:
    folder = dataset_root(NAME, data_dir) / "relation_extraction" / SPLIT_FOLDERS[check_split(split)]
    if not folder.is_dir():
        raise DatasetNotFoundError(f"dataset {NAME!r}: split folder {folder} not found")
    return str(folder)


def load(split: str, limit: int | None = None, data_dir: str | None = None) -> list[Example]:
    """Sentences of SanWen's ``split`` with sentence-level entities and relations."""
    return copy_examples(_parse(_folder(split, data_dir), split)[0], limit)


def stats(split: str, data_dir: str | None = None) -> LoadStats:
    return _parse(_folder(split, data_dir), split)[1]
