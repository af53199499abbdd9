"""One unit of documents through the models, in two halves.

``prepare`` (CPU only, no ONNX session): check each row, split sentences, tokenize every
sentence of the unit in ONE batched call, cut long sentences into windows, plan batches.
A reader thread runs it for the next unit while ``infer`` runs the models on this one.

``infer``: stage 1 (:class:`Stage1Stream`) -> Viterbi/argmax -> spans with scores ->
merge windows -> relations (:mod:`nere.engine.relations`) -> output tables in document order.

Entity score: the mean, over the entity's tokens, of the softmax probability of the tag
each token was decoded to (for CRF models: the softmax of the emission scores).
Relation score: the softmax probability of the predicted relation label.
"""
from __future__ import annotations

from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import pyarrow as pa

from nere.engine.bundle import Bundle, Graph
from nere.engine.config import EngineConfig
from nere.engine.core.decode import decode_tags, kept_decoder
from nere.engine.core.featurize import Batch, Featurizer, Tokens
from nere.engine.errors import EngineError
from nere.engine.relations import Relations, UnitEntities
from nere.engine.core.trim import trim_entity_spans
from nere.engine.segment import (
    Candidate,
    check_line_breaks,
    check_texts,
    edge_distance,
    merge_windows,
    split_sentences,
    window_plan,
)
from nere.engine.stages import (
    DECODE_GROUP_POSITIONS,
    STAGE1_JOB_POSITIONS,
    StageObserver,
    collate_flat_many,
    decode_groups,
    plan_batches,
    run_stage1,
    run_stage2,
    span_scores,
)
from nere.engine.tables import build, entity_schema, failure_schema, relation_schema


@dataclass
class Unit:
    """A slice of input rows. ``ids`` stays Arrow so the outputs keep its type."""

    ids: pa.Array
    texts: list[Any]
    source: str = "<table>"
    row0: int = 0  # row number of the first row in ``source``


@dataclass
class Prepared:
    unit: Unit
    texts: list[str | None]  # checked text per row; None for a failed row
    failures: list[tuple[int, str]]  # (row in unit, reason)
    cleaned: int  # rows whose control characters were replaced
    sent_doc: list[int]  # per sentence: row in unit
    sent_no: list[int]  # per sentence: index within its document
    sent_start: list[int]  # per sentence: char offset in the document
    sent_end: list[int]
    sent_windows: list[int]  # per sentence: number of windows (rows)
    tokens: Tokens  # per sentence, flat; offsets relative to the sentence
    sent_len: np.ndarray  # per sentence: content tokens
    row_sent: np.ndarray  # per model row: sentence
    row_tok0: np.ndarray  # per model row: first token (sentence coordinates)
    row_n: np.ndarray  # per model row: content tokens
    batches: list[np.ndarray]  # model rows per batch
    inputs: list[Batch] = field(default_factory=list)  # the padded stage-1 batch of each (prepare fills it)

    @property
    def n_tokens(self) -> int:
        return int(self.row_n.sum())

    def rows_batches(self, featurizer: Featurizer, batches: list[np.ndarray],
                     extras: dict[str, np.ndarray] | None = None) -> list[Batch]:
        """The padded stage-1 batch of each list of model rows (windows of sentences), all
        gathered at once; ``extras``: the extra inputs of the unit's flat tokens."""
        rows = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
        starts = self.tokens.first[self.row_sent[rows]] + self.row_tok0[rows]
        return collate_flat_many(featurizer, self.tokens, starts, self.row_n[rows], [len(b) for b in batches],
                                 extras)



@dataclass
class Found:
    """Spans decoded from one stage-1 batch, as flat arrays in batch-row order."""

    row: np.ndarray  # batch row
    sent: np.ndarray  # sentence
    start: np.ndarray  # token span, sentence coordinates
    end: np.ndarray
    label: list[str]
    score: np.ndarray
    dist: np.ndarray  # tokens to the nearest window edge inside the sentence
    t0: np.ndarray  # first token of the row's window

    def part(self, keep: slice, first_row: int) -> "Found":
        """The spans in ``keep``, with rows renumbered from ``first_row`` (one batch of a group)."""
        return Found(self.row[keep] - first_row, self.sent[keep], self.start[keep], self.end[keep],
                     self.label[keep], self.score[keep], self.dist[keep], self.t0[keep])


T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K")

ENTITY_COLUMNS = ("doc", "entity_id", "start", "end", "text", "label", "score", "sentence_index")


@dataclass
class UnitResult:
    entities: pa.Table
    relations: pa.Table
    failures: pa.Table
    documents: int
    failed: int
    cleaned: int
    tokens: int


def _unit_spans(prep: Prepared, founds: list[Found]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], np.ndarray]:
    """(sentence, start token, end token, label, score) of a unit's entities, ordered by
    sentence and start, as arrays: the decoded groups concatenated, and the spans of a
    sentence cut into windows merged (:func:`merge_windows`, a Python step for those rare
    sentences only). A sentence of one window holds disjoint spans from one row."""
    sent = np.concatenate([f.sent for f in founds])
    start = np.concatenate([f.start for f in founds])
    end = np.concatenate([f.end for f in founds])
    score = np.concatenate([f.score for f in founds])
    labels = [lab for f in founds for lab in f.label]
    multi = np.asarray(prep.sent_windows, dtype=np.int64)[sent] > 1
    if multi.any():
        dist = np.concatenate([f.dist for f in founds])
        by_sent: dict[int, list[Candidate]] = {}
        for k in np.flatnonzero(multi).tolist():
            by_sent.setdefault(int(sent[k]), []).append(
                (int(start[k]), int(end[k]), labels[k], float(score[k]), int(dist[k])))
        merged = [(s_i, *c[:4]) for s_i, cands in by_sent.items() for c in merge_windows(cands)]
        one = np.flatnonzero(~multi)
        sent = np.concatenate([sent[one], np.array([m[0] for m in merged], dtype=np.int64)])
        start = np.concatenate([start[one], np.array([m[1] for m in merged], dtype=np.int64)])
        end = np.concatenate([end[one], np.array([m[2] for m in merged], dtype=np.int64)])
        score = np.concatenate([score[one], np.array([m[4] for m in merged], dtype=score.dtype)])
        labels = [labels[k] for k in one.tolist()] + [m[3] for m in merged]
    order = np.lexsort((start, sent))
    return sent[order], start[order], end[order], [labels[k] for k in order.tolist()], score[order]


Job = tuple[Any, "Prepared", list[list[int]], list[tuple[np.ndarray, Batch]]]  # key, unit, decode groups, batches


class Stage1Stream:
    """Stage 1 ahead of the caller, over one stream of batches that runs on from one
    unit into the next, so the model keeps working while a unit's last batches are
    decoded and its tables written. ``streams`` worker threads run jobs: runs of a unit's
    consecutive batches, up to ``STAGE1_JOB_POSITIONS`` padded positions (small batches
    suit recurrent models; one hand-off per batch costs more than it overlaps)."""

    def __init__(self, featurizer: Featurizer, batch_tokens: int, streams: int,
                 call: Callable[[Batch], dict[str, Any]]) -> None:
        self.featurizer, self.batch_tokens, self.streams, self.call = featurizer, batch_tokens, streams, call

    @property
    def group_positions(self) -> int:
        """Padded positions decoded together (:func:`decode_groups`)."""
        return max(DECODE_GROUP_POSITIONS, self.batch_tokens)

    def run(self, preps: Iterable[tuple[K, "Prepared"]], overlap: bool = True
            ) -> Iterator[tuple[Any, "Prepared", list[list[int]], list[tuple[np.ndarray, Batch]], list[dict]]]:
        """(key, unit, decode groups, job, stage-1 outputs) per job, in order; without
        ``overlap`` each job runs in this thread when it is reached."""
        job_positions = max(STAGE1_JOB_POSITIONS, self.batch_tokens)
        depth = self.group_positions // job_positions + 1  # about one decoding group in flight
        jobs = self.jobs(preps, job_positions)
        return self.ahead(self._work, jobs, depth, self.streams) if overlap else map(self._work, jobs)

    def _work(self, item: Job) -> tuple[Any, ...]:
        return (*item, [self.call(batch) for _, batch in item[3]])

    def jobs(self, preps: Iterable[tuple[K, "Prepared"]], job_positions: int) -> Iterator[Job]:
        """The jobs of each unit in turn. Batches come gathered by ``prepare``, so a worker
        holds the GIL only to enter and leave onnxruntime."""
        for key, prep in preps:
            groups = decode_groups(prep.batches, prep.row_n, self.featurizer, self.group_positions)
            if not prep.batches:
                yield key, prep, groups, []  # a unit with nothing to run still yields its tables
            job: list[tuple[np.ndarray, Batch]] = []
            positions = 0
            for rows, batch in zip(prep.batches, prep.inputs, strict=True):
                size = batch.input_ids.size
                if job and positions + size > job_positions:
                    yield key, prep, groups, job
                    job, positions = [], 0
                job.append((rows, batch))
                positions += size
            if job:
                yield key, prep, groups, job

    @staticmethod
    def ahead(work: Callable[[T], R], items: Iterable[T], depth: int = 1, workers: int = 1) -> Iterator[R]:
        """``work(item)`` for each item, yielded in order, with up to ``depth`` later items
        submitted to ``workers`` threads while the caller handles the current one. ``items``
        is consumed lazily (one item per result yielded), so it may be an open-ended stream."""
        it = iter(items)
        depth = max(1, int(depth))
        with ThreadPoolExecutor(max_workers=max(1, min(int(workers), depth)), thread_name_prefix="nere-stage1") as pool:
            pending = deque(pool.submit(work, x) for x in islice(it, depth))
            while pending:
                done = pending.popleft().result()
                for x in islice(it, 1):
                    pending.append(pool.submit(work, x))
                yield done


def _model_rows(sent_len: np.ndarray, max_content: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(windows per sentence, sentence per model row, first token per model row): one row
    per sentence that fits, none for a sentence without tokens, and overlapping windows
    for the (rare) longer ones; rows stay in sentence order."""
    windows = (sent_len > 0).astype(np.int64)
    long = np.flatnonzero(sent_len > max_content)
    plans = [window_plan(int(sent_len[si]), max_content) for si in long]
    windows[long] = [len(w) for w in plans]
    row_sent = np.repeat(np.arange(len(sent_len)), windows)
    row_tok0 = np.zeros(len(row_sent), dtype=np.int64)
    if len(long):
        first_row = np.cumsum(windows) - windows
        for si, wins in zip(long.tolist(), plans):
            row_tok0[first_row[si] : first_row[si] + len(wins)] = wins
    return windows, row_sent, row_tok0


class Pipeline:
    """Runs an NER (or joint) bundle, optionally with a separate RE bundle, over units.
    ``config`` is resolved against the bundles here; ``observer`` sees every model call."""

    def __init__(self, ner: Bundle, re_bundle: Bundle | None = None, config: EngineConfig | None = None,
                 observer: StageObserver | None = None) -> None:
        _check_bundles(ner, re_bundle)
        cfg = (config or EngineConfig()).resolved(ner.manifest, re_bundle.manifest if re_bundle else None,
                                                  ner.provider)
        self.config, self.ner, self.re_bundle, self.observer = cfg, ner, re_bundle, observer
        self.batch_tokens, self.max_doc_chars = int(cfg.batch_tokens), int(cfg.max_doc_chars)  # type: ignore[arg-type]
        self.streams = int(cfg.streams)  # type: ignore[arg-type]  # stage-1 calls in flight at once
        self.re_streams = int(cfg.re_streams) if re_bundle is not None else 1  # type: ignore[arg-type]
        self.line_breaks = check_line_breaks(cfg.line_breaks)  # "split": a line break ends a sentence
        # one decoder for the run: it keeps its certificate bounds and what it learnt (see CRFDecoder)
        self.crf = kept_decoder(ner.ner.crf)  # type: ignore[union-attr]
        self.relations = "joint" if ner.re is not None else ("separate" if re_bundle is not None else None)
        self.rel = Relations(ner, re_bundle, self.batch_tokens, self.re_streams, self._stage1, self._stage2) \
            if self.relations else None
        want = ["emissions", "hidden"] if self.relations == "joint" else ["emissions"]
        self.stream = Stage1Stream(ner.featurizer, self.batch_tokens, self.streams,
                                   lambda batch: self._stage1(ner.stage1, batch, want))

    @property
    def reuse_tokens(self) -> bool:
        """A separate RE bundle reads the unit's tokens (it has the NER bundle's tokenizer)."""
        return self.rel is not None and self.rel.reuse_tokens

    @reuse_tokens.setter
    def reuse_tokens(self, value: bool) -> None:
        if self.rel is not None:
            self.rel.reuse_tokens = value

    def _stage1(self, graph: Graph, batch: Batch, outputs: Sequence[str]) -> dict[str, Any]:
        if self.observer is None:
            return run_stage1(graph, batch, outputs)
        return self.observer.stage1(graph, batch, outputs)

    def _stage2(self, graph: Graph, *args: Any) -> np.ndarray:
        if self.observer is None:
            return run_stage2(graph, *args)
        return self.observer.stage2(graph, *args)

    # ---------------------------------------------------------------- prepare (CPU)
    def prepare(self, unit: Unit) -> Prepared:
        f = self.ner.featurizer
        texts, failures, cleaned = self._check(unit)
        spans = [split_sentences(text, self.line_breaks) if text is not None else [] for text in texts]
        sent_doc = [d for d, sp in enumerate(spans) for _ in sp]
        sent_no = [k for sp in spans for k in range(len(sp))]
        flat = [se for sp in spans for se in sp]
        pieces = [texts[d][s:e] for d, (s, e) in zip(sent_doc, flat)]  # type: ignore[index]
        tokens = f.tokenize_flat(pieces)
        windows, row_sent, row_tok0 = _model_rows(tokens.lengths, f.max_content)
        row_n = np.minimum(tokens.lengths[row_sent], f.max_content)
        prep = Prepared(
            unit, texts, failures, cleaned, sent_doc, sent_no, [s for s, _ in flat], [e for _, e in flat],
            windows.tolist(), tokens, tokens.lengths, row_sent, row_tok0, row_n,
            plan_batches(row_n, f, self.batch_tokens),
        )
        # extra inputs of every token, computed over whole sentences as in training (a
        # window keeps its neighbours' bigrams and lexicon words), then cut like the ids
        features = self.ner.features
        extras = features.compute(pieces, tokens.offsets, tokens.first) if features else None
        # all of the unit's batches at once, here: gathered one at a time between model
        # calls, each ran on caches the model had just filled
        prep.inputs = prep.rows_batches(f, prep.batches, extras)
        return prep

    def _check(self, unit: Unit) -> tuple[list[str | None], list[tuple[int, str]], int]:
        """Each row's checked text (None: failed), the failures and the rows cleaned; a row
        with a null id fails too (its text is checked first)."""
        id_ok = unit.ids.is_valid().to_numpy(zero_copy_only=False) if unit.ids.null_count else None
        texts, failures, cleaned = check_texts(unit.texts, self.max_doc_chars)
        if id_ok is not None:
            failures += [(i, "null doc_id") for i in np.flatnonzero(~id_ok).tolist() if texts[i] is not None]
            for i, _ in failures:
                texts[i] = None
            failures.sort()
        return texts, failures, cleaned

    # ---------------------------------------------------------------- infer (model)
    def infer(self, prep: Prepared, overlap: bool = True) -> UnitResult:
        """One unit's tables (see :meth:`infer_stream`); without ``overlap`` every step
        runs in turn in this thread (for profiling, and for a unit of one batch, which has
        nothing to overlap)."""
        return next(self.infer_stream([(None, prep)], overlap))[1]

    def infer_stream(self, preps: Iterable[tuple[K, Prepared]], overlap: bool = True
                     ) -> Iterator[tuple[K, UnitResult]]:
        """(key, tables) for each (key, prepared unit), in order. Stage 1 runs ahead
        (:class:`Stage1Stream`); decoding (Viterbi or argmax, spans, scores) runs once per
        *group* of consecutive batches (:func:`decode_groups`): batches are ordered by
        width, so a group pads little, and a Viterbi pass costs a Python-level step per
        position whatever the number of rows."""
        current: Prepared | None = None
        for key, prep, groups, job, outs in self.stream.run(preps, overlap):
            if prep is not current:
                current, g, group = prep, 0, []
                founds: list[Found] = []
                rel_cands: dict[int, list] = defaultdict(list)  # sentence -> joint relation candidates
            for (rows, batch), out in zip(job, outs):
                group.append((rows, batch, out))
                if len(group) == len(groups[g]):
                    self._decode(prep, group, founds, rel_cands)
                    g, group = g + 1, []
            if g == len(groups):  # the unit's last group is decoded
                yield key, self._assemble(prep, founds, rel_cands, overlap)

    def _decode(self, prep: Prepared, items: list[tuple[np.ndarray, Batch, dict[str, Any]]],
                founds: list[Found], rel_cands: dict[int, list]) -> None:
        """Tags, spans and (joint bundles) relation candidates of a group of stage-1 batches."""
        rows, lengths, emissions = self._stacked(items)
        tags = decode_tags(emissions, lengths, self.crf)
        found = self._found(prep, rows, tags, emissions)
        if found is None:
            return
        founds.append(found)
        if self.relations != "joint":
            return
        bounds = np.searchsorted(found.row, np.cumsum([0] + [len(it[0]) for it in items]))  # rows ascend
        r0 = 0
        for k, (batch_rows, batch, out) in enumerate(items):
            if bounds[k + 1] > bounds[k]:
                self._joint_candidates(found.part(slice(bounds[k], bounds[k + 1]), r0), batch.input_ids.shape[1],
                                       out["hidden"], rel_cands)
            r0 += len(batch_rows)

    def _stacked(self, items: list[tuple[np.ndarray, Batch, dict[str, Any]]]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, lengths, emissions) of a group of batches, the emissions zero-padded to
        its widest batch."""
        if len(items) == 1:
            rows, batch, out = items[0]
            return rows, batch.lengths, np.asarray(out["emissions"], dtype=np.float32)
        rows = np.concatenate([it[0] for it in items])
        lengths = np.concatenate([it[1].lengths for it in items])
        width = max(it[1].input_ids.shape[1] for it in items)
        emissions = np.zeros((len(rows), width, len(self.ner.ner.tagset.tags)), dtype=np.float32)  # type: ignore[union-attr]
        r0 = 0
        for _, batch, out in items:
            em = out["emissions"]
            emissions[r0 : r0 + em.shape[0], : em.shape[1]] = em
            r0 += em.shape[0]
        return rows, lengths, emissions

    def _found(self, prep: Prepared, rows: np.ndarray, tags: np.ndarray, emissions: np.ndarray) -> Found | None:
        """Spans of a group of batches (rows stacked), flat, in row order; scores and
        window-edge distances vectorised."""
        lead, tagset = self.ner.featurizer.lead, self.ner.ner.tagset  # type: ignore[union-attr]
        i, s, e, labels = tagset.batch_spans(tags[:, lead:], prep.row_n[rows])
        if not len(i):
            return None
        score = span_scores(emissions, tags, i, lead + s, lead + e)  # mean tag probability
        r = rows[i]
        t0, n, sent = prep.row_tok0[r], prep.row_n[r], prep.row_sent[r]
        dist = edge_distance(t0 + s, t0 + e, t0, t0 + n, prep.sent_len[sent])
        return Found(i, sent, t0 + s, t0 + e, labels, score, dist, t0)

    def _joint_candidates(self, found: Found, width: int, hidden: Any, rel_cands: dict[int, list]) -> None:
        """A joint bundle's relations among each row's own entities, kept per sentence with
        their distance from a window edge until the windows are merged."""
        lead = self.ner.featurizer.lead
        h, t, best, prob = self.rel.in_batch(found.row, found.start - found.t0 + lead,  # type: ignore[union-attr]
                                             found.end - found.t0 + lead, found.label, width, hidden)
        for a, b, label, p in zip(h.tolist(), t.tolist(), best, prob):
            rel_cands[int(found.sent[a])].append((
                (int(found.start[a]), int(found.end[a]), found.label[a]),
                (int(found.start[b]), int(found.end[b]), found.label[b]),
                label, p, int(min(found.dist[a], found.dist[b])),
            ))

    # ---------------------------------------------------------------- outputs
    def _assemble(self, prep: Prepared, founds: list[Found], rel_cands: dict[int, list],
                  overlap: bool = True) -> UnitResult:
        """Merge windows, map token spans to document characters, number entities per
        document and attach relations to entity ids, all in document order."""
        if not founds:
            return self._tables(prep, {k: [] for k in ENTITY_COLUMNS}, [])
        ent, ents = self._entities(prep, founds)
        rels: list[tuple] = []  # (doc, head_id, tail_id, label index, score)
        if self.relations == "separate":
            rels = self.rel.of_unit(prep, ents, overlap)  # type: ignore[union-attr]
        elif rel_cands:
            rels = _joint_relations(prep, ents, rel_cands)
        return self._tables(prep, ent, sorted(rels, key=lambda r: r[:3]))

    def _entities(self, prep: Prepared, founds: list[Found]) -> tuple[dict[str, Any], UnitEntities]:
        """The unit's entity columns, and its entities for the relation stage."""
        unit = prep.unit
        si, ts, te, labels, scores = _unit_spans(prep, founds)
        offsets = prep.tokens.offsets
        first_token = prep.tokens.first[si]
        base = np.asarray(prep.sent_start, dtype=np.int64)[si]
        cs = base + offsets[first_token + ts, 0]
        ce = base + offsets[first_token + te - 1, 1]
        doc = np.asarray(prep.sent_doc, dtype=np.int64)[si]
        # entity edges trimmed by the rule evaluation uses (core/trim.py); token spans stay the model's
        kept, cs, ce = trim_entity_spans(prep.texts, doc, cs, ce)  # type: ignore[arg-type]
        if kept is not None:
            if not len(kept):
                return self._tables(prep, {k: [] for k in ENTITY_COLUMNS}, [])
            si, ts, te, scores, doc = si[kept], ts[kept], te[kept], scores[kept], doc[kept]
            labels = [labels[k] for k in kept.tolist()]
        eid = np.arange(len(doc)) - np.searchsorted(doc, doc)  # documents are contiguous and in order
        docs, starts, ends = doc.tolist(), cs.tolist(), ce.tolist()
        ent = {
            "doc": docs,
            "entity_id": eid.astype(np.int32),
            "start": cs.astype(np.int32),
            "end": ce.astype(np.int32),
            "text": [unit.texts[d][a:b] for d, a, b in zip(docs, starts, ends)],  # from the input itself
            "label": labels,
            "score": scores.astype(np.float32),
            "sentence_index": np.asarray(prep.sent_no, dtype=np.int32)[si],
        }
        return ent, UnitEntities(si, ts, te, cs, ce, labels, eid)

    def _tables(self, prep: Prepared, ent: dict[str, Any], rels: list[tuple]) -> UnitResult:
        unit = prep.unit
        id_type = unit.ids.type
        doc_rows = ent.pop("doc")
        ids = np.asarray(ent["entity_id"]).tolist()
        text_of = {(d, i): t for d, i, t in zip(doc_rows, ids, ent["text"])} if rels else {}
        entities = build(entity_schema(id_type), unit.ids, doc_rows, ent)
        labels = self.rel.labels if self.rel is not None else []
        relations = build(relation_schema(id_type), unit.ids, [r[0] for r in rels], {
            "head_id": [r[1] for r in rels],
            "tail_id": [r[2] for r in rels],
            "head_text": [text_of[(r[0], r[1])] for r in rels],
            "tail_text": [text_of[(r[0], r[2])] for r in rels],
            "label": [labels[r[3]] for r in rels],
            "score": [r[4] for r in rels],
        })
        fail_rows = [r for r, _ in prep.failures]
        failures = build(failure_schema(id_type), unit.ids, fail_rows, {
            "source": [unit.source] * len(fail_rows),
            "row": [unit.row0 + r for r in fail_rows],
            "reason": [why for _, why in prep.failures],
        })
        return UnitResult(entities, relations, failures, len(unit.texts), len(prep.failures), prep.cleaned,
                          prep.n_tokens)


def _check_bundles(ner: Bundle, re_bundle: Bundle | None) -> None:
    """One-line errors for bundles that cannot run together."""
    if ner.ner is None:
        raise EngineError(f"bundle {ner.path} is RE-only: pass it as the RE bundle (--re-model) next to an NER bundle")
    if re_bundle is not None:
        if re_bundle.re is None:
            raise EngineError(f"bundle {re_bundle.path} has no relation stage (task {re_bundle.task})")
        if ner.re is not None:
            raise EngineError(f"bundle {ner.path} is a joint bundle with its own relation stage; drop the RE bundle")
        if re_bundle.features is not None:
            raise EngineError(f"bundle {re_bundle.path}: a separate RE bundle with extra stage-1 inputs "
                              f"({', '.join(re_bundle.features.input_names)}) is not supported yet")


def _joint_relations(prep: Prepared, ents: UnitEntities, rel_cands: dict[int, list]) -> list[tuple]:
    """A joint bundle's candidates attached to the merged entities' ids: per sentence and
    pair, the candidate found farthest from a window edge; a candidate whose entity the
    window merge dropped is dropped too."""
    si, ts, te, labels, eid = ents.sent, ents.tok_start, ents.tok_end, ents.labels, ents.eid
    present = np.flatnonzero(np.diff(si, prepend=-1))  # sentence -> its slice of the entities
    ranges = dict(zip(si[present].tolist(), zip(present.tolist(), np.append(present[1:], len(si)).tolist())))
    rels: list[tuple] = []
    for s_i, cands in rel_cands.items():
        if s_i not in ranges:
            continue  # the window merge dropped every entity of the sentence
        k0, k1 = ranges[s_i]
        ids = {(int(ts[k]), int(te[k]), labels[k]): int(eid[k]) for k in range(k0, k1)}
        best: dict[tuple[int, int], tuple] = {}
        for head, tail, lab, score, dist in cands:
            h, t = ids.get(head), ids.get(tail)
            if h is None or t is None:
                continue
            if (h, t) not in best or dist > best[(h, t)][2]:
                best[(h, t)] = (lab, score, dist)
        d = prep.sent_doc[s_i]
        rels.extend((d, h, t, lab, score) for (h, t), (lab, score, _) in best.items())
    return rels
