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

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from nere.engine.bundle import Bundle
from nere.engine.core.decode import decode_tags
from nere.engine.core.featurize import Encoded, Featurizer, char_to_token_spans
from nere.engine.core.pairs import candidate_pairs
from nere.engine.core.types import Entity
from nere.engine.errors import EngineError
from nere.engine.segment import (
    DEFAULT_MAX_DOC_CHARS,
    Candidate,
    check_text,
    edge_distance,
    merge_windows,
    split_sentences,
    window_plan,
)
from nere.engine.stages import chosen_probs, collate, plan_batches, run_stage1, run_stage2
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
    encs: list[Encoded]  # per sentence, offsets relative to the sentence
    row_sent: np.ndarray  # per model row: sentence
    row_tok0: np.ndarray  # per model row: first token (sentence coordinates)
    row_n: np.ndarray  # per model row: content tokens
    batches: list[np.ndarray]  # model rows per batch

    @property
    def tokens(self) -> int:
        return int(self.row_n.sum())


@dataclass
class UnitResult:
    entities: pa.Table
    relations: pa.Table
    failures: pa.Table
    documents: int
    failed: int
    cleaned: int
    tokens: int


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


class Pipeline:
    """Runs an NER (or joint) bundle, optionally with a separate RE bundle, over units."""

    def __init__(
        self,
        ner: Bundle,
        re_bundle: Bundle | None = None,
        batch_tokens: int = 8192,
        max_doc_chars: int = DEFAULT_MAX_DOC_CHARS,
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
        self.ner = ner
        self.re_bundle = re_bundle
        self.batch_tokens = int(batch_tokens)
        self.max_doc_chars = int(max_doc_chars)
        self.relations = "joint" if ner.re is not None else ("separate" if re_bundle is not None else None)

    # ---------------------------------------------------------------- prepare (CPU)
    def prepare(self, unit: Unit) -> Prepared:
        f = self.ner.featurizer
        id_ok = unit.ids.is_valid().to_numpy(zero_copy_only=False) if unit.ids.null_count else None
        texts: list[str | None] = []
        failures: list[tuple[int, str]] = []
        cleaned = 0
        for i, value in enumerate(unit.texts):
            text, why, was_cleaned = check_text(value, self.max_doc_chars)
            if why is None and id_ok is not None and not id_ok[i]:
                text, why = None, "null doc_id"
            cleaned += was_cleaned
            texts.append(text)
            if why is not None:
                failures.append((i, why))
        sent_doc, sent_no, starts, ends, pieces = [], [], [], [], []
        for d, text in enumerate(texts):
            if text is None:
                continue
            for k, (s, e) in enumerate(split_sentences(text)):
                sent_doc.append(d)
                sent_no.append(k)
                starts.append(s)
                ends.append(e)
                pieces.append(text[s:e])
        encs = f.tokenize(pieces) if pieces else []
        maxc = f.max_content
        row_sent, row_tok0, row_n, windows = [], [], [], []
        for si, enc in enumerate(encs):
            n = len(enc.ids)
            wins = window_plan(n, maxc) if n > maxc else ([0] if n else [])
            windows.append(len(wins))
            for w in wins:
                row_sent.append(si)
                row_tok0.append(w)
                row_n.append(min(n, maxc))
        row_n_arr = np.asarray(row_n, dtype=np.int64)
        return Prepared(
            unit, texts, failures, cleaned, sent_doc, sent_no, starts, ends, windows, encs,
            np.asarray(row_sent, dtype=np.int64), np.asarray(row_tok0, dtype=np.int64), row_n_arr,
            plan_batches(row_n_arr, f, self.batch_tokens),
        )

    # ---------------------------------------------------------------- infer (model)
    def infer(self, prep: Prepared) -> UnitResult:
        f, spec = self.ner.featurizer, self.ner.ner
        assert spec is not None
        lead = f.lead
        n_sent = len(prep.encs)
        cands: list[list[Candidate]] = [[] for _ in range(n_sent)]
        rel_cands: list[list] = [[] for _ in range(n_sent)]
        want = ["emissions", "hidden"] if self.relations == "joint" else ["emissions"]
        for rows in prep.batches:
            batch = collate(f, [_window(prep.encs[prep.row_sent[r]], prep.row_tok0[r], prep.row_n[r]) for r in rows])
            out = run_stage1(self.ner.stage1, batch, want)
            emissions = np.asarray(out["emissions"], dtype=np.float32)
            tags = decode_tags(emissions, batch.lengths, spec.crf)
            probs = chosen_probs(emissions, tags)
            row_ents: dict[int, list[Candidate]] = {}
            for i in np.flatnonzero((tags[:, lead:] != 0).any(axis=1)):
                r = rows[i]
                si, t0, n = int(prep.row_sent[r]), int(prep.row_tok0[r]), int(prep.row_n[r])
                total = len(prep.encs[si].ids)
                ents = [
                    (t0 + s, t0 + e, lab, float(probs[i, lead + s : lead + e].mean()),
                     edge_distance(t0 + s, t0 + e, t0, t0 + n, total))
                    for s, e, lab in spec.tagset.ids_to_spans(tags[i, lead : lead + n])
                ]
                if ents:
                    cands[si].extend(ents)
                    row_ents[int(i)] = ents
            if self.relations == "joint" and row_ents:
                self._joint_relations(prep, rows, batch.input_ids.shape[1], out["hidden"], row_ents, rel_cands)
        return self._assemble(prep, cands, rel_cands)

    def _joint_relations(self, prep: Prepared, rows: np.ndarray, width: int, hidden: Any,
                         row_ents: dict[int, list[Candidate]], rel_cands: list[list]) -> None:
        """Stage 2 over the pairs of each row's own entities (one encoding per row)."""
        re_spec = self.ner.re
        assert re_spec is not None and self.ner.stage2 is not None
        type_ids, lead = re_spec.type_ids, self.ner.featurizer.lead
        cols: list[list[int]] = [[] for _ in range(7)]
        keys = []
        for i, ents in row_ents.items():
            typed = [c for c in ents if c[2] in type_ids]
            if len(typed) < 2:
                continue
            t0 = int(prep.row_tok0[rows[i]])
            for h, t, _ in candidate_pairs([Entity(c[0], c[1], c[2]) for c in typed], type_pairs=re_spec.type_pairs):
                hc, tc = typed[h], typed[t]
                for col, v in zip(cols, (i, lead + hc[0] - t0, lead + hc[1] - t0, type_ids[hc[2]],
                                         lead + tc[0] - t0, lead + tc[1] - t0, type_ids[tc[2]])):
                    col.append(v)
                keys.append((int(prep.row_sent[rows[i]]), hc[:3], tc[:3], min(hc[4], tc[4])))
        if not keys:
            return
        a = [np.asarray(c, dtype=np.int64) for c in cols]
        probs = run_stage2(self.ner.stage2, hidden, width, a[0], (a[1], a[2], a[3]), (a[4], a[5], a[6]),
                           self.batch_tokens)
        best = probs.argmax(axis=1)
        for k in np.flatnonzero(best != 0):  # label 0 is the negative label
            si, head, tail, dist = keys[k]
            rel_cands[si].append((head, tail, int(best[k]), float(probs[k, best[k]]), dist))

    # ---------------------------------------------------------------- outputs
    def _assemble(self, prep: Prepared, cands: list[list[Candidate]], rel_cands: list[list]) -> UnitResult:
        unit = prep.unit
        ent = {k: [] for k in ("doc", "entity_id", "start", "end", "text", "label", "score", "sentence_index")}
        rels: list[tuple] = []  # (doc, head_id, tail_id, label, score)
        next_id = [0] * len(unit.texts)
        sent_ents: list[tuple[int, list[tuple[int, int, str, int]]]] = []
        for si, found in enumerate(cands):
            if not found:
                continue
            merged = found if prep.sent_windows[si] == 1 else merge_windows(found)
            d, base, offs = prep.sent_doc[si], prep.sent_start[si], prep.encs[si].offsets
            original = unit.texts[d]  # entity text comes from the input itself
            ids: dict[tuple, int] = {}
            mine = []
            for s, e, lab, score, _ in merged:
                cs, ce = base + int(offs[s, 0]), base + int(offs[e - 1, 1])
                eid = next_id[d]
                next_id[d] += 1
                ids[(s, e, lab)] = eid
                mine.append((cs, ce, lab, eid))
                for k, v in zip(ent, (d, eid, cs, ce, original[cs:ce], lab, score, prep.sent_no[si])):
                    ent[k].append(v)
            sent_ents.append((si, mine))
            best: dict[tuple[int, int], tuple] = {}
            for head, tail, lab, score, dist in rel_cands[si]:
                h, t = ids.get(head), ids.get(tail)
                if h is None or t is None:
                    continue  # an entity the window merge dropped
                if (h, t) not in best or dist > best[(h, t)][2]:
                    best[(h, t)] = (lab, score, dist)
            rels.extend((d, h, t, lab, score) for (h, t), (lab, score, _) in best.items())
        if self.relations == "separate":
            rels = self._separate_relations(prep, sent_ents)
        return self._tables(prep, ent, sorted(rels, key=lambda r: r[:3]))

    def _separate_relations(self, prep: Prepared, sent_ents: list[tuple[int, list[tuple[int, int, str, int]]]]
                            ) -> list[tuple]:
        """Relations from a separate RE bundle: its own tokenizer re-encodes the sentences
        that have candidate pairs; NER character spans map onto its tokens. A long
        sentence is windowed and each pair is scored once, in the window where both
        entities lie farthest from an edge; pairs no window holds together are skipped."""
        rb = self.re_bundle
        assert rb is not None and rb.re is not None and rb.stage2 is not None
        f, spec = rb.featurizer, rb.re
        type_ids = spec.type_ids
        jobs = [(si, typed) for si, ents in sent_ents if len(typed := [e for e in ents if e[2] in type_ids]) >= 2]
        if not jobs:
            return []
        encs = f.tokenize([prep.texts[prep.sent_doc[si]][prep.sent_start[si] : prep.sent_end[si]] for si, _ in jobs])
        rows: list[Encoded] = []
        row_pairs: list[list[tuple]] = []
        for (si, typed), enc in zip(jobs, encs):
            base, n = prep.sent_start[si], len(enc.ids)
            toks = _token_spans(enc.offsets, [(cs - base, ce - base, lab) for cs, ce, lab, _ in typed])
            size = min(n, f.max_content)
            chosen: dict[tuple[int, int], tuple[int, int]] = {}  # (head, tail) -> (distance, window)
            for w in window_plan(n, f.max_content) if n > f.max_content else [0]:
                inside = [k for k, tk in enumerate(toks) if tk is not None and w <= tk[0] and tk[1] <= w + size]
                if len(inside) < 2:
                    continue
                pairs = candidate_pairs([Entity(toks[k][0], toks[k][1], typed[k][2]) for k in inside],
                                        type_pairs=spec.type_pairs)
                for h, t, _ in pairs:
                    kh, kt = inside[h], inside[t]
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
        out = []
        lead = f.lead
        for batch_rows in plan_batches(np.array([len(r.ids) for r in rows], dtype=np.int64), f, self.batch_tokens):
            batch = collate(f, [rows[r] for r in batch_rows])
            hidden = run_stage1(rb.stage1, batch, ["hidden"])["hidden"]
            flat = [(i,) + p for i, r in enumerate(batch_rows) for p in row_pairs[r]]
            if not flat:
                continue
            a = np.asarray([p[:7] for p in flat], dtype=np.int64)
            probs = run_stage2(rb.stage2, hidden, batch.input_ids.shape[1], a[:, 0],
                               (lead + a[:, 1], lead + a[:, 2], a[:, 3]), (lead + a[:, 4], lead + a[:, 5], a[:, 6]),
                               self.batch_tokens)
            best = probs.argmax(axis=1)
            out.extend((flat[k][7], flat[k][8], flat[k][9], int(best[k]), float(probs[k, best[k]]))
                       for k in np.flatnonzero(best != 0))
        return out

    def _tables(self, prep: Prepared, ent: dict[str, list], rels: list[tuple]) -> UnitResult:
        unit = prep.unit
        id_type = unit.ids.type
        doc_rows = ent.pop("doc")
        text_of = {(d, i): t for d, i, t in zip(doc_rows, ent["entity_id"], ent["text"])} if rels else {}
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
                          prep.tokens)
