"""The one relation path: pair each model row's typed entities, read the rows' hidden
states, score every pair with stage 2 and keep the pairs not given the negative label.

Only where the hidden states come from depends on the bundle kind: a joint bundle's own
stage-1 batches (scored while they are decoded, one NER window per row), or a separate RE
bundle's stage 1 over RE rows built from the unit's entities (the unit's tokens when both
bundles share a tokenizer, else the RE tokenizer's; long sentences cut into windows, each
pair scored in the window where both entities lie farthest from an edge).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from nere.engine.bundle import Bundle
from nere.engine.core.featurize import Batch, Encoded, Featurizer, char_to_token_spans
from nere.engine.core.pairs import grouped_pairs, type_pair_table
from nere.engine.segment import edge_distance, window_plan
from nere.engine.stages import collate, collate_flat_many, plan_batches

Span = tuple[np.ndarray, np.ndarray, np.ndarray]  # (start positions, end positions, type ids)
Stage1 = Callable[[Any, Batch, Sequence[str]], dict[str, Any]]
Stage2 = Callable[..., np.ndarray]


@dataclass
class UnitEntities:
    """A unit's merged entities in sentence order: sentence, token span (sentence
    coordinates of the NER tokens), character span (document), label and id of each."""

    sent: np.ndarray
    tok_start: np.ndarray
    tok_end: np.ndarray
    char_start: np.ndarray
    char_end: np.ndarray
    labels: list[str]
    eid: np.ndarray


@dataclass
class RowPairs:
    """Pairs over RE rows: per pair its head and tail (unit entity indices), its row and
    the row's first token; per row its sentence, first token and length."""

    head: np.ndarray
    tail: np.ndarray
    row: np.ndarray
    row_sent: np.ndarray
    row_tok0: np.ndarray
    row_n: np.ndarray


class Relations:
    """Scores relations for a pipeline: ``stage1``/``stage2`` run a model call (the
    pipeline's, so an observer sees them); ``re_bundle`` is None for a joint bundle."""

    def __init__(self, ner: Bundle, re_bundle: Bundle | None, batch_tokens: int, re_streams: int,
                 stage1: Stage1, stage2: Stage2) -> None:
        self.source = re_bundle or ner
        spec = self.source.re
        assert spec is not None and self.source.stage2 is not None
        self.spec, self.separate = spec, re_bundle is not None
        self.type_pairs = type_pair_table(spec.type_pairs, spec.type_ids)
        self.batch_tokens, self.re_streams = batch_tokens, re_streams
        self.stage1, self.stage2 = stage1, stage2
        # an RE bundle with the NER bundle's tokenizer reuses the unit's tokens (the usual
        # case: both built from the same training text, or the same pretrained BERT)
        self.reuse_tokens = self.separate and re_bundle.tokenizer_sha256 == ner.tokenizer_sha256  # type: ignore[union-attr]

    @property
    def labels(self) -> list[str]:
        return self.spec.relation_labels

    def types(self, labels: Sequence[str]) -> np.ndarray:
        """Type id of each entity label; -1 for a type the relation stage does not pair."""
        type_of = self.spec.type_ids
        return np.fromiter((type_of.get(lab, -1) for lab in labels), dtype=np.int64, count=len(labels))

    def score(self, hidden: Any, width: int, place: np.ndarray, head: Span, tail: Span
              ) -> tuple[np.ndarray, list[int], list[float]]:
        """Stage 2 over pairs of one stage-1 batch (``place``: each pair's row in it):
        the indices of the pairs given a relation (label 0 is the negative label), and
        their label indices and probabilities."""
        probs = self.stage2(self.source.stage2, hidden, width, place, head, tail, self.batch_tokens)
        best = probs.argmax(axis=1)
        keep = np.flatnonzero(best != 0)
        return keep, best[keep].tolist(), probs[keep, best[keep]].tolist()

    # ------------------------------------------------------------ joint: the NER batch's states
    def in_batch(self, row: np.ndarray, start: np.ndarray, end: np.ndarray, labels: list[str], width: int,
                 hidden: Any) -> tuple[np.ndarray, np.ndarray, list[int], list[float]]:
        """Relations among each row's own entities of a joint bundle's stage-1 batch
        (``start``/``end``: stage-1 positions, rows ascending): (head, tail, label, probability)
        of the kept pairs, heads and tails indexing the spans given."""
        types = self.types(labels)
        h, t = grouped_pairs(row, types, self.type_pairs)
        if not len(h):
            return h, t, [], []
        keep, best, prob = self.score(hidden, width, row[h], (start[h], end[h], types[h]),
                                      (start[t], end[t], types[t]))
        return h[keep], t[keep], best, prob

    # ------------------------------------------------------------ separate: the RE bundle's states
    def of_unit(self, prep: Any, ents: UnitEntities, overlap: bool = True) -> list[tuple]:
        """(document row, head id, tail id, label index, probability) of a unit's relations
        from the separate RE bundle, in batch order."""
        f = self.source.featurizer
        types = self.types(ents.labels)
        head, tail = grouped_pairs(ents.sent, types, self.type_pairs)  # sentence order
        if not len(head):
            return []
        encs, tok_s, tok_e, n_of = self._re_tokens(prep, ents, np.unique(ents.sent[head]))
        mapped = (tok_s[head] >= 0) & (tok_s[tail] >= 0)  # an entity on no RE token is never paired
        head, tail = head[mapped], tail[mapped]
        pairs = self._rows(ents.sent, tok_s, tok_e, n_of, head, tail, f.max_content)
        if not len(pairs.head):
            return []
        batches = plan_batches(pairs.row_n, f, self.batch_tokens)
        inputs = self._features(prep, encs, pairs, batches, f)
        sizes = [len(b) for b in batches]
        order = np.concatenate(batches)
        batch_of_row = np.repeat(np.arange(len(batches)), sizes)[np.argsort(order)]
        place = np.empty(len(order), dtype=np.int64)  # a row's place in its batch
        place[order] = np.concatenate([np.arange(k) for k in sizes])
        pair_batch, pair_place = batch_of_row[pairs.row], place[pairs.row]
        by_batch = np.lexsort((np.arange(len(pairs.head)), pair_place, pair_batch))
        bounds = np.searchsorted(pair_batch[by_batch], np.arange(len(batches) + 1))
        doc = np.asarray(prep.sent_doc, dtype=np.int64)[ents.sent]
        lead, t0 = f.lead, pairs.row_tok0[pairs.row]

        def run(k: int) -> list[tuple]:
            sel = by_batch[bounds[k]:bounds[k + 1]]
            h, t, base = pairs.head[sel], pairs.tail[sel], lead - t0[sel]
            hidden = self.stage1(self.source.stage1, inputs[k], ["hidden"])["hidden"]
            keep, best, prob = self.score(hidden, inputs[k].input_ids.shape[1], pair_place[sel],
                                          (base + tok_s[h], base + tok_e[h], types[h]),
                                          (base + tok_s[t], base + tok_e[t], types[t]))
            return list(zip(doc[h[keep]].tolist(), ents.eid[h[keep]].tolist(), ents.eid[t[keep]].tolist(),
                            best, prob))

        return self._run_batches(run, range(len(batches)), overlap)

    def _re_tokens(self, prep: Any, ents: UnitEntities, sents: np.ndarray
                   ) -> tuple[dict[int, Encoded] | None, np.ndarray, np.ndarray, dict[int, int]]:
        """The RE tokens of the sentences ``sents``: (their encodings, None when the unit's
        tokens serve), each entity's RE token span (-1 where it covers no RE token, or lies
        in another sentence) and each sentence's RE token count."""
        if self.reuse_tokens:
            lengths = prep.tokens.lengths
            return None, ents.tok_start, ents.tok_end, {int(s): int(lengths[s]) for s in sents.tolist()}
        texts = [prep.texts[prep.sent_doc[s]][prep.sent_start[s]:prep.sent_end[s]] for s in sents.tolist()]
        encs = dict(zip(sents.tolist(), self.source.featurizer.tokenize(texts)))
        tok_s = np.full(len(ents.sent), -1, dtype=np.int64)
        tok_e = np.full(len(ents.sent), -1, dtype=np.int64)
        bounds = np.searchsorted(ents.sent, np.stack([sents, sents + 1]))
        for s, k0, k1 in zip(sents.tolist(), bounds[0].tolist(), bounds[1].tolist()):
            base = prep.sent_start[s]
            spans = [(int(ents.char_start[k]) - base, int(ents.char_end[k]) - base, ents.labels[k]) for k in range(k0, k1)]
            for k, span in zip(range(k0, k1), _token_spans(encs[s].offsets, spans)):
                if span is not None:
                    tok_s[k], tok_e[k] = span
        return encs, tok_s, tok_e, {s: len(e.ids) for s, e in encs.items()}

    @staticmethod
    def _rows(sent: np.ndarray, tok_s: np.ndarray, tok_e: np.ndarray, n_of: dict[int, int], head: np.ndarray,
              tail: np.ndarray, max_content: int) -> RowPairs:
        """One RE row per (sentence, window) with a pair, in that order, its pairs in
        (head, tail) order. A sentence that fits is one window; in a longer one each pair
        goes to the first of the windows where both entities lie farthest from an edge,
        and a pair that no window holds is dropped."""
        ps = sent[head]
        n = np.array([n_of[int(s)] for s in ps.tolist()], dtype=np.int64)
        win = np.zeros(len(head), dtype=np.int64)
        held = np.ones(len(head), dtype=bool)
        for s in np.unique(ps[n > max_content]).tolist():  # the rare sentences longer than a window
            sel = np.flatnonzero(ps == s)
            starts = np.asarray(window_plan(n_of[s], max_content), dtype=np.int64)[:, None]
            ends = starts + max_content
            h, t = head[sel], tail[sel]
            inside = (starts <= tok_s[h]) & (tok_e[h] <= ends) & (starts <= tok_s[t]) & (tok_e[t] <= ends)
            dist = np.minimum(edge_distance(tok_s[h], tok_e[h], starts, ends, n_of[s]),
                              edge_distance(tok_s[t], tok_e[t], starts, ends, n_of[s]))
            dist = np.where(inside, dist, -1)  # (windows, pairs)
            best = dist.argmax(axis=0)  # the first window of the largest distance
            win[sel] = starts[best, 0]
            held[sel] = dist[best, np.arange(len(sel))] >= 0
        head, tail, ps, n, win = head[held], tail[held], ps[held], n[held], win[held]
        order = np.lexsort((np.arange(len(head)), win, ps))
        head, tail, ps, n, win = head[order], tail[order], ps[order], n[order], win[order]
        new_row = np.ones(len(head), dtype=bool)
        new_row[1:] = (ps[1:] != ps[:-1]) | (win[1:] != win[:-1])
        first = np.flatnonzero(new_row)
        return RowPairs(head, tail, np.cumsum(new_row) - 1, ps[first], win[first],
                        np.minimum(n[first], max_content))

    def _features(self, prep: Any, encs: dict[int, Encoded] | None, pairs: RowPairs, batches: list[np.ndarray],
                  f: Featurizer) -> list[Batch]:
        """The padded RE stage-1 batch of each list of rows: from the unit's tokens, or
        from the RE tokenizer's encodings."""
        if encs is None:
            order = np.concatenate(batches)
            starts = prep.tokens.first[pairs.row_sent[order]] + pairs.row_tok0[order]
            return collate_flat_many(f, prep.tokens, starts, pairs.row_n[order], [len(b) for b in batches])
        rows = [_window(encs[int(s)], int(w), int(n))
                for s, w, n in zip(pairs.row_sent.tolist(), pairs.row_tok0.tolist(), pairs.row_n.tolist())]
        return [collate(f, [rows[r] for r in b.tolist()]) for b in batches]

    def _run_batches(self, run: Callable[[int], list[tuple]], batches: Sequence[int], overlap: bool) -> list[tuple]:
        """``run`` of every RE batch, concatenated in order: on ``re_streams`` workers at
        once (the small encoders run better as concurrent calls of a share of the threads),
        or in this thread without ``overlap``."""
        if overlap and self.re_streams > 1 and len(batches) > 1:
            with ThreadPoolExecutor(max_workers=self.re_streams, thread_name_prefix="nere-re") as pool:
                parts = list(pool.map(run, batches))
        else:
            parts = [run(b) for b in batches]
        return [r for part in parts for r in part]


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
