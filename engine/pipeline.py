"""One unit of documents through the models, in two halves.

``prepare`` (CPU only, no ONNX session): check each row, split sentences, tokenize every
sentence of the unit in ONE batched call, cut long sentences into windows, plan batches.
A reader thread runs it for the next unit while ``infer`` runs the models on this one.

``infer``: stage 1 -> Viterbi/argmax -> spans with scores -> (stage 2 on pairs of one
row's entities) -> merge windows -> output tables in document order.

Entity score: the mean, over the entity's tokens, of the softmax probability of the tag
each token was decoded to (for CRF models: the softmax of the emission scores).
Relation score: the softmax probability of the predicted relation label.
"""
from __future__ import annotations

from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import pyarrow as pa

from nere.engine.bundle import Bundle
from nere.engine.core.decode import decode_tags, kept_decoder
from nere.engine.core.featurize import Batch, Encoded, Featurizer, Tokens, char_to_token_spans
from nere.engine.core.pairs import candidate_pairs, grouped_pairs, type_pair_table
from nere.engine.core.trim import trim_entity_spans
from nere.engine.core.types import Entity
from nere.engine.errors import EngineError
from nere.engine.segment import (
    DEFAULT_LINE_BREAKS,
    DEFAULT_MAX_DOC_CHARS,
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
    collate,
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

    def rows_batches(self, featurizer: Featurizer, batches: list[np.ndarray]) -> list[Batch]:
        """The padded stage-1 batch of each list of model rows (windows of sentences), all
        gathered at once."""
        rows = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
        starts = self.tokens.first[self.row_sent[rows]] + self.row_tok0[rows]
        return collate_flat_many(featurizer, self.tokens, starts, self.row_n[rows], [len(b) for b in batches])



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


def _window(enc: Encoded, start: int, n: int) -> Encoded:
    return Encoded(enc.ids[start : start + n], enc.offsets[start : start + n])


def _token_spans(offsets: np.ndarray, spans: list[tuple[int, int, str]]) -> list[tuple[int, int] | None]:
    """Character spans -> token spans of another tokenizer; None where a span covers no token."""
    mapped, _ = char_to_token_spans(offsets, spans)
    if len(mapped) == len(spans):
        return [(s, e) for s, e, _ in mapped]
    out: list[tuple[int, int] | None] = []
    for sp in spans:
        one, _ = char_to_token_spans(offsets, [sp])
        out.append((one[0][0], one[0][1]) if one else None)
    return out


def _ahead(work: Callable[[T], R], items: Iterable[T], depth: int = 1, workers: int = 1) -> Iterator[R]:
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


class Pipeline:
    """Runs an NER (or joint) bundle, optionally with a separate RE bundle, over units."""

    def __init__(
        self,
        ner: Bundle,
        re_bundle: Bundle | None = None,
        batch_tokens: int = 8192,
        max_doc_chars: int = DEFAULT_MAX_DOC_CHARS,
        streams: int = 1,
        re_streams: int = 1,
        line_breaks: str = DEFAULT_LINE_BREAKS,
    ) -> None:
        if ner.ner is None:
            raise EngineError(
                f"bundle {ner.path} is RE-only: pass it as the RE bundle (--re-model) next to an NER bundle"
            )
        if re_bundle is not None:
            if re_bundle.re is None:
                raise EngineError(f"bundle {re_bundle.path} has no relation stage (task {re_bundle.task})")
            if ner.re is not None:
                raise EngineError(f"bundle {ner.path} is a joint bundle with its own relation stage; drop the RE bundle")
        if batch_tokens < 1:
            raise EngineError(f"batch_tokens must be positive, got {batch_tokens}")
        if streams < 1:
            raise EngineError(f"streams must be positive, got {streams}")
        if re_streams < 1:
            raise EngineError(f"re_streams must be positive, got {re_streams}")
        self.line_breaks = check_line_breaks(line_breaks)  # "split": a line break ends a sentence
        self.ner = ner
        self.re_bundle = re_bundle
        # one decoder for the run: it keeps its certificate bounds and what it learnt (see CRFDecoder)
        self.crf = kept_decoder(ner.ner.crf)
        self.batch_tokens = int(batch_tokens)
        self.max_doc_chars = int(max_doc_chars)
        self.streams = int(streams)  # stage-1 calls in flight at once (worker threads)
        self.re_streams = int(re_streams)  # a separate RE bundle's batches run at once
        self.relations = "joint" if ner.re is not None else ("separate" if re_bundle is not None else None)
        # an RE bundle with the NER bundle's tokenizer reuses the unit's tokens (the usual
        # case: both built from the same training text, or the same pretrained BERT)
        self.reuse_tokens = re_bundle is not None and re_bundle.tokenizer_sha256 == ner.tokenizer_sha256
        # the relation stage's type_pairs as a (head type, tail type) table, for the array paths
        re_spec = ner.re or (re_bundle.re if re_bundle is not None else None)
        self.type_pairs = type_pair_table(re_spec.type_pairs, re_spec.type_ids) if re_spec is not None else None

    # ---------------------------------------------------------------- prepare (CPU)
    def prepare(self, unit: Unit) -> Prepared:
        f = self.ner.featurizer
        id_ok = unit.ids.is_valid().to_numpy(zero_copy_only=False) if unit.ids.null_count else None
        texts, failures, cleaned = check_texts(unit.texts, self.max_doc_chars)
        if id_ok is not None:  # a row with a null id fails too (its text is checked first)
            failures += [(i, "null doc_id") for i in np.flatnonzero(~id_ok).tolist() if texts[i] is not None]
            for i, _ in failures:
                texts[i] = None
            failures.sort()
        spans = [split_sentences(text, self.line_breaks) if text is not None else [] for text in texts]
        sent_doc = [d for d, sp in enumerate(spans) for _ in sp]
        sent_no = [k for sp in spans for k in range(len(sp))]
        flat = [se for sp in spans for se in sp]
        starts = [s for s, _ in flat]
        ends = [e for _, e in flat]
        pieces = [texts[d][s:e] for d, (s, e) in zip(sent_doc, flat)]  # type: ignore[index]
        tokens = f.tokenize_flat(pieces)
        sent_len = tokens.lengths
        maxc = f.max_content
        # one model row per sentence that fits, none for a sentence without tokens, and
        # overlapping windows for the (rare) longer ones; rows stay in sentence order
        windows = (sent_len > 0).astype(np.int64)
        long = np.flatnonzero(sent_len > maxc)
        plans = [window_plan(int(sent_len[si]), maxc) for si in long]
        windows[long] = [len(w) for w in plans]
        row_sent = np.repeat(np.arange(len(sent_len)), windows)
        row_tok0 = np.zeros(len(row_sent), dtype=np.int64)
        if len(long):
            first_row = np.cumsum(windows) - windows
            for si, wins in zip(long.tolist(), plans):
                row_tok0[first_row[si] : first_row[si] + len(wins)] = wins
        row_n_arr = np.minimum(sent_len[row_sent], maxc)
        prep = Prepared(
            unit, texts, failures, cleaned, sent_doc, sent_no, starts, ends, windows.tolist(), tokens, sent_len,
            row_sent, row_tok0, row_n_arr,
            plan_batches(row_n_arr, f, self.batch_tokens),
        )
        # all of the unit's batches at once, here: gathered one at a time between model
        # calls, each ran on caches the model had just filled (measured 4-5x slower)
        prep.inputs = prep.rows_batches(f, prep.batches)
        return prep

    # ---------------------------------------------------------------- infer (model)
    def infer(self, prep: Prepared, overlap: bool = True) -> UnitResult:
        """One unit's tables (see :meth:`infer_stream`); without ``overlap`` every step
        runs in turn in this thread (for profiling, and for a unit of one batch, which has
        nothing to overlap)."""
        return next(self.infer_stream([(None, prep)], overlap))[1]

    def infer_stream(self, preps: Iterable[tuple[K, Prepared]], overlap: bool = True
                     ) -> Iterator[tuple[K, UnitResult]]:
        """(key, tables) for each (key, prepared unit), in order.

        Stage 1 runs ahead in ``streams`` worker threads (onnxruntime releases the GIL)
        over one stream of batches that runs on from one unit into the next, so the model
        keeps working while a unit's last batches are decoded, its tables assembled and
        the caller writes them. Decoding (Viterbi or argmax, spans, scores) runs once per
        *group* of consecutive batches (:func:`decode_groups`) rather than once per batch:
        batches are ordered by width, so a group pads little, and a Viterbi pass costs a
        Python-level step per position whatever the number of rows."""
        f = self.ner.featurizer
        want = ["emissions", "hidden"] if self.relations == "joint" else ["emissions"]
        budget = max(DECODE_GROUP_POSITIONS, self.batch_tokens)

        def jobs() -> Iterator[tuple[K, Prepared, list[list[int]], list[tuple[np.ndarray, Batch]]]]:
            # Batches come gathered by prepare, so a worker needs the GIL only to enter and
            # leave onnxruntime: gathering in the worker made it wait for the GIL while this
            # thread decoded, with the model idle. A job is a run of a unit's consecutive
            # batches (up to STAGE1_JOB_POSITIONS padded positions) that one worker runs in a
            # row: small batches suit the model (recurrent ones), one hand-off per batch did not
            for key, prep in preps:
                groups = decode_groups(prep.batches, prep.row_n, f, budget)
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

        def stage1(item: tuple[K, Prepared, list[list[int]], list[tuple[np.ndarray, Batch]]]) -> tuple[Any, ...]:
            return (*item, [run_stage1(self.ner.stage1, batch, want) for _, batch in item[3]])

        job_positions = max(STAGE1_JOB_POSITIONS, self.batch_tokens)
        depth = budget // job_positions + 1  # about one decoding group in flight
        results = _ahead(stage1, jobs(), depth, self.streams) if overlap else map(stage1, jobs())
        current: Prepared | None = None
        for key, prep, groups, job, outs in results:
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
        """Tags, spans and (joint bundles) relations of a group of stage-1 batches; the
        group's emissions are stacked, zero-padded to its widest batch."""
        spec = self.ner.ner
        assert spec is not None
        if len(items) == 1:
            rows, batch, out = items[0]
            emissions, lengths = np.asarray(out["emissions"], dtype=np.float32), batch.lengths
        else:
            rows = np.concatenate([it[0] for it in items])
            lengths = np.concatenate([it[1].lengths for it in items])
            width = max(it[1].input_ids.shape[1] for it in items)
            emissions = np.zeros((len(rows), width, len(spec.tagset.tags)), dtype=np.float32)
            r0 = 0
            for _, batch, out in items:
                em = out["emissions"]
                emissions[r0 : r0 + em.shape[0], : em.shape[1]] = em
                r0 += em.shape[0]
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
                self._joint_relations(found.part(slice(bounds[k], bounds[k + 1]), r0), batch.input_ids.shape[1],
                                      out["hidden"], rel_cands)
            r0 += len(batch_rows)

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

    def _joint_relations(self, found: Found, width: int, hidden: Any, rel_cands: dict[int, list]) -> None:
        """Stage 2 over the pairs of each row's own entities (one encoding per row)."""
        re_spec = self.ner.re
        assert re_spec is not None and self.ner.stage2 is not None
        type_of = re_spec.type_ids
        types = np.fromiter((type_of.get(lab, -1) for lab in found.label), dtype=np.int64, count=len(found.label))
        h, t = grouped_pairs(found.row, types, self.type_pairs)  # the spans come in row order
        if not len(h):
            return
        lead = self.ner.featurizer.lead
        pos_s, pos_e = found.start - found.t0 + lead, found.end - found.t0 + lead  # stage-1 positions
        probs = run_stage2(self.ner.stage2, hidden, width, found.row[h], (pos_s[h], pos_e[h], types[h]),
                           (pos_s[t], pos_e[t], types[t]), self.batch_tokens)
        best = probs.argmax(axis=1)
        for k in np.flatnonzero(best != 0).tolist():  # label 0 is the negative label
            a, b = int(h[k]), int(t[k])
            rel_cands[int(found.sent[a])].append((
                (int(found.start[a]), int(found.end[a]), found.label[a]),
                (int(found.start[b]), int(found.end[b]), found.label[b]),
                int(best[k]), float(probs[k, best[k]]), int(min(found.dist[a], found.dist[b])),
            ))

    # ---------------------------------------------------------------- outputs
    def _assemble(self, prep: Prepared, founds: list[Found], rel_cands: dict[int, list],
                  overlap: bool = True) -> UnitResult:
        """Merge windows, map token spans to document characters, number entities per
        document and attach relations to entity ids, all in document order."""
        unit = prep.unit
        if not founds:
            return self._tables(prep, {k: [] for k in ENTITY_COLUMNS}, [])
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
        rels: list[tuple] = []  # (doc, head_id, tail_id, label index, score)
        if not rel_cands and self.relations != "separate":
            return self._tables(prep, ent, rels)
        if self.relations == "separate":
            flat = self._flat_relations(prep, si, ts, te, labels, eid, overlap)
            if flat is not None:
                return self._tables(prep, ent, sorted(flat, key=lambda r: r[:3]))
        # sentence -> its slice of the (sentence-ordered) entities
        present = np.flatnonzero(np.diff(si, prepend=-1))
        ranges = dict(zip(si[present].tolist(), zip(present.tolist(), np.append(present[1:], len(si)).tolist())))
        for s_i, cands in rel_cands.items():
            if s_i not in ranges:
                continue  # the window merge dropped every entity of the sentence
            k0, k1 = ranges[s_i]
            ids = {(int(ts[k]), int(te[k]), labels[k]): int(eid[k]) for k in range(k0, k1)}
            best: dict[tuple[int, int], tuple] = {}
            for head, tail, lab, score, dist in cands:
                h, t = ids.get(head), ids.get(tail)
                if h is None or t is None:
                    continue  # an entity the window merge dropped
                if (h, t) not in best or dist > best[(h, t)][2]:
                    best[(h, t)] = (lab, score, dist)
            d = prep.sent_doc[s_i]
            rels.extend((d, h, t, lab, score) for (h, t), (lab, score, _) in best.items())
        if self.relations == "separate":  # the general path: windows, or the RE bundle's own tokenizer
            tok_s, tok_e = ts.tolist(), te.tolist()
            sent_ents = [(s_i, [(starts[k], ends[k], labels[k], int(eid[k]), tok_s[k], tok_e[k])
                                for k in range(k0, k1)]) for s_i, (k0, k1) in ranges.items()]
            rels = self._separate_relations(prep, sent_ents, overlap)
        return self._tables(prep, ent, sorted(rels, key=lambda r: r[:3]))

    def _flat_relations(self, prep: Prepared, si: np.ndarray, ts: np.ndarray, te: np.ndarray, labels: list[str],
                        eid: np.ndarray, overlap: bool = True) -> list[tuple] | None:
        """:meth:`_separate_relations` in the usual case, as array operations over the
        unit's entities (``si``/``ts``/``te``/``labels``/``eid``: sentence, token span,
        label and id of each, in sentence order): the RE bundle reuses the unit's tokens and
        every sentence with a candidate pair fits one RE window. Then each such sentence is
        one RE row of its own tokens, its pairs are every ordered pair of its typed entities
        that ``type_pairs`` allows (:func:`grouped_pairs`, the order of the general path),
        and batches, pairs and results are the general path's. None in any other case."""
        rb = self.re_bundle
        assert rb is not None and rb.re is not None and rb.stage2 is not None
        if not self.reuse_tokens:
            return None
        f, spec = rb.featurizer, rb.re
        type_of = spec.type_ids
        types = np.fromiter((type_of.get(lab, -1) for lab in labels), dtype=np.int64, count=len(labels))
        head, tail = grouped_pairs(si, types, self.type_pairs)  # unit-level entity indices, sentence order
        if not len(head):
            return []
        row_sent, row_of_pair = np.unique(si[head], return_inverse=True)  # a row per sentence with a pair
        counts = prep.tokens.lengths[row_sent]
        if (counts > f.max_content).any():
            return None  # a sentence to window: the general path
        batches = plan_batches(counts, f, self.batch_tokens)
        order = np.concatenate(batches)
        inputs = collate_flat_many(f, prep.tokens, prep.tokens.first[row_sent][order], counts[order],
                                   [len(b) for b in batches])
        batch_of_row = np.repeat(np.arange(len(batches)), [len(b) for b in batches])[np.argsort(order)]
        place = np.empty(len(order), dtype=np.int64)  # a row's place in its batch
        place[order] = np.concatenate([np.arange(len(b)) for b in batches])
        pair_batch, pair_place = batch_of_row[row_of_pair], place[row_of_pair]
        by_batch = np.lexsort((np.arange(len(head)), pair_place, pair_batch))  # the general path's pair order
        bounds = np.searchsorted(pair_batch[by_batch], np.arange(len(batches) + 1))
        doc = np.asarray(prep.sent_doc, dtype=np.int64)[si]
        lead = f.lead

        def score(k: int) -> list[tuple]:
            sel = by_batch[bounds[k]:bounds[k + 1]]
            h, t = head[sel], tail[sel]
            best, prob, keep = self._re_batch(inputs[k], pair_place[sel], (lead + ts[h], lead + te[h], types[h]),
                                              (lead + ts[t], lead + te[t], types[t]))
            return list(zip(doc[h[keep]].tolist(), eid[h[keep]].tolist(), eid[t[keep]].tolist(), best, prob))

        return self._run_re_batches(score, range(len(batches)), overlap)

    def _separate_relations(self, prep: Prepared,
                            sent_ents: list[tuple[int, list[tuple[int, int, str, int, int, int]]]],
                            overlap: bool = True) -> list[tuple]:
        """Relations from a separate RE bundle: its own tokenizer re-encodes the sentences
        that have candidate pairs and the NER character spans map onto its tokens, unless
        it is the NER bundle's tokenizer: then the unit's tokens and the NER token spans
        (``sent_ents``: char start, char end, label, entity id, token start, token end)
        serve as they are. A long
        sentence is windowed and each pair is scored once, in the window where both
        entities lie farthest from an edge; pairs no window holds together are skipped."""
        rb = self.re_bundle
        assert rb is not None and rb.re is not None and rb.stage2 is not None
        f, spec = rb.featurizer, rb.re
        type_ids = spec.type_ids
        jobs = [(si, typed) for si, ents in sent_ents if len(typed := [e for e in ents if e[2] in type_ids]) >= 2]
        if not jobs:
            return []
        if self.reuse_tokens:
            encs = [prep.tokens.encoded(si) for si, _ in jobs]
        else:
            encs = f.tokenize([prep.texts[prep.sent_doc[si]][prep.sent_start[si] : prep.sent_end[si]] for si, _ in jobs])
        rows: list[Encoded] = []
        row_pairs: list[list[tuple]] = []
        for (si, typed), enc in zip(jobs, encs):
            base, n = prep.sent_start[si], len(enc.ids)
            if self.reuse_tokens:
                toks: list[tuple[int, int] | None] = [(e[4], e[5]) for e in typed]
            else:
                toks = _token_spans(enc.offsets, [(e[0] - base, e[1] - base, e[2]) for e in typed])
            size = min(n, f.max_content)
            chosen: dict[tuple[int, int], tuple[int, int]] = {}  # (head, tail) -> (distance, window)
            windows = window_plan(n, f.max_content) if n > f.max_content else [0]
            for w in windows:
                inside = [k for k, tk in enumerate(toks) if tk is not None and w <= tk[0] and tk[1] <= w + size]
                if len(inside) < 2:
                    continue
                pairs = candidate_pairs([Entity(toks[k][0], toks[k][1], typed[k][2]) for k in inside],
                                        type_pairs=spec.type_pairs)
                for h, t, _ in pairs:
                    kh, kt = inside[h], inside[t]
                    if len(windows) == 1:  # the usual case: one window, nothing to choose
                        chosen[(kh, kt)] = (0, w)
                        continue
                    dist = min(edge_distance(*toks[kh], w, w + size, n), edge_distance(*toks[kt], w, w + size, n))
                    if (kh, kt) not in chosen or dist > chosen[(kh, kt)][0]:
                        chosen[(kh, kt)] = (dist, w)
            by_window: dict[int, list[tuple]] = {}
            for (kh, kt), (_, w) in sorted(chosen.items()):
                (hs, he), (ts, te) = toks[kh], toks[kt]
                by_window.setdefault(w, []).append((
                    hs - w, he - w, type_ids[typed[kh][2]], ts - w, te - w, type_ids[typed[kt][2]],
                    prep.sent_doc[si], typed[kh][3], typed[kt][3],
                ))
            for w in sorted(by_window):
                rows.append(_window(enc, w, size))
                row_pairs.append(by_window[w])
        lead = f.lead

        def score(batch_rows: np.ndarray) -> list[tuple]:
            flat = [(i,) + p for i, r in enumerate(batch_rows) for p in row_pairs[r]]
            if not flat:
                return []
            a = np.asarray([p[:7] for p in flat], dtype=np.int64)
            best, prob, keep = self._re_batch(collate(f, [rows[r] for r in batch_rows]), a[:, 0],
                                              (lead + a[:, 1], lead + a[:, 2], a[:, 3]),
                                              (lead + a[:, 4], lead + a[:, 5], a[:, 6]))
            return [(flat[k][7], flat[k][8], flat[k][9], b, p) for k, b, p in zip(keep.tolist(), best, prob)]

        batches = plan_batches(np.array([len(r.ids) for r in rows], dtype=np.int64), f, self.batch_tokens)
        return self._run_re_batches(score, batches, overlap)

    def _re_batch(self, batch: Batch, place: np.ndarray, head: tuple[np.ndarray, np.ndarray, np.ndarray],
                  tail: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[list[int], list[float], np.ndarray]:
        """One RE batch: stage 1, then stage 2 over its pairs (``place``: each pair's row in
        the batch; ``head``/``tail``: stage-1 start and end positions and type ids). Returns
        the label index and probability of each pair not given the negative label (label
        0), and those pairs' indices."""
        rb = self.re_bundle
        assert rb is not None and rb.stage2 is not None
        hidden = run_stage1(rb.stage1, batch, ["hidden"])["hidden"]
        probs = run_stage2(rb.stage2, hidden, batch.input_ids.shape[1], place, head, tail, self.batch_tokens)
        best = probs.argmax(axis=1)
        keep = np.flatnonzero(best != 0)
        return best[keep].tolist(), probs[keep, best[keep]].tolist(), keep

    def _run_re_batches(self, score: Callable[[T], list[tuple]], batches: Sequence[T], overlap: bool) -> list[tuple]:
        """``score`` of every RE batch, concatenated in order: on ``re_streams`` workers at
        once (like stage 1's streams, the small encoders run better as concurrent one-thread
        calls than as one call on all threads), or in this thread without ``overlap``."""
        if overlap and self.re_streams > 1 and len(batches) > 1:
            with ThreadPoolExecutor(max_workers=self.re_streams, thread_name_prefix="nere-re") as pool:
                parts = list(pool.map(score, batches))
        else:
            parts = [score(b) for b in batches]
        return [r for part in parts for r in part]

    def _tables(self, prep: Prepared, ent: dict[str, Any], rels: list[tuple]) -> UnitResult:
        unit = prep.unit
        id_type = unit.ids.type
        doc_rows = ent.pop("doc")
        ids = np.asarray(ent["entity_id"]).tolist()
        text_of = {(d, i): t for d, i, t in zip(doc_rows, ids, ent["text"])} if rels else {}
        entities = build(entity_schema(id_type), unit.ids, doc_rows, ent)
        labels = self.ner.re.relation_labels if self.ner.re else (self.re_bundle.re.relation_labels if rels else [])
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
