"""The PyTorch baseline ``nere bench --baseline torch`` compares bundles against: what a
user would write with the training library and no engine.

Per batch of N documents: split sentences (the engine's sentence rule), tokenize, cut at
the model length, pad to the batch's longest sentence, one eager forward under
``torch.no_grad`` with ``torch.set_num_threads(threads)``, decode with the core functions
(Viterbi/argmax, tags -> character spans). A joint model's relations come from the
training library's ``predict_re`` on the predicted entities (it re-encodes the sentences
that have a candidate pair, as ``nere evaluate`` does); so do a separate RE checkpoint's. Output rows are collected and
written as one Parquet file at the end.

Imports torch: load this module only for ``--baseline torch``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from nere.engine.core.decode import decode_tags, kept_decoder, row_char_spans
from nere.engine.core.types import Entity, Example
from nere.engine.segment import split_sentences
from nere.train.checkpoint import load_checkpoint


class TorchBaseline:
    """An eager PyTorch checkpoint run the plain way over batches of documents."""

    def __init__(self, checkpoint: str | Path, threads: int, batch_docs: int, device: str = "cpu",
                 re_checkpoint: str | Path | None = None) -> None:
        torch.set_num_threads(int(threads))
        self.device = "cuda" if device == "cuda" else "cpu"
        self.checkpoint = str(checkpoint)
        self.model, self.featurizer, self.config = load_checkpoint(checkpoint, self.device)
        self.task = self.config.get("task")
        if self.task not in ("ner", "joint"):
            raise ValueError(f"checkpoint {checkpoint}: the torch baseline runs NER or joint models, not {self.task!r}")
        if self.task == "joint" and re_checkpoint is not None:
            raise ValueError(f"checkpoint {checkpoint} is a joint model: it needs no separate RE checkpoint")
        self.re_model = self.re_featurizer = None
        if re_checkpoint is not None:
            self.re_model, self.re_featurizer, re_config = load_checkpoint(re_checkpoint, self.device)
            if re_config.get("task") != "re":
                raise ValueError(f"RE checkpoint {re_checkpoint} is a {re_config.get('task')!r} model, not 're'")
        elif self.task == "joint":
            self.re_model, self.re_featurizer = self.model, self.featurizer
        self.batch_docs = int(batch_docs)
        self.crf = kept_decoder(self.model.crf_arrays())
        self.truncated = self.sentences = self.tokens = 0  # running counts over every extract() call

    def extract(self, ids: list, texts: list) -> tuple[list[dict], list[dict]]:
        """(entity rows, relation rows) for one batch of documents."""
        f, model = self.featurizer, self.model
        pieces, where = [], []  # sentence text; (doc row, sentence start)
        for d, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                continue
            for s, e in split_sentences(text):
                pieces.append(text[s:e])
                where.append((d, s))
        if not pieces:
            return [], []
        encs = []
        for enc in f.tokenize(pieces):
            enc, cut = f.truncate(enc)
            self.truncated += int(cut)
            self.tokens += len(enc.ids)
            encs.append(enc)
        self.sentences += len(encs)
        batch = f.collate(encs)
        input_ids = torch.from_numpy(batch.input_ids).to(self.device)
        mask = torch.from_numpy(batch.attention_mask).to(self.device)
        with torch.no_grad():
            out = model.forward_stage1(input_ids, mask) if self.task == "joint" else model(input_ids, mask)
            emissions = (out[0] if isinstance(out, tuple) else out).float().cpu().numpy()
        tags = decode_tags(emissions, batch.lengths, self.crf)
        entities: list[dict] = []
        sent_spans = []
        for r, (d, base) in enumerate(where):
            spans = row_char_spans(model.tagset, tags[r], batch.offsets[r], f.lead, len(encs[r].ids), pieces[r])
            sent_spans.append(spans)
            entities += [{"doc_id": ids[d], "start": base + s, "end": base + e, "label": lab,
                          "text": texts[d][base + s : base + e]} for s, e, lab in spans]
        relations = self._relations(ids, where, pieces, sent_spans) if self.re_model is not None else []
        return entities, relations

    def _relations(self, ids: list, where: list, pieces: list[str], sent_spans: list) -> list[dict]:
        from nere.train.re_task import predict_re, type_pairs

        todo = [k for k, spans in enumerate(sent_spans) if len(spans) >= 2]
        if not todo:
            return []
        out = predict_re(self.re_model, self.re_featurizer, [Example(pieces[k]) for k in todo],
                         entities=[[Entity(s, e, lab) for s, e, lab in sent_spans[k]] for k in todo],
                         type_pairs=type_pairs(self.re_model) or None, batch_size=max(len(todo), 1))
        rows = []
        for k, triples in zip(todo, out["triples"]):
            d, base = where[k]
            rows += [{"doc_id": ids[d], "head_start": base + h[0], "head_end": base + h[1], "tail_start": base + t[0],
                      "tail_end": base + t[1], "label": lab} for h, t, lab in sorted(triples)]
        return rows

    def run(self, corpus: str | Path, limit: int | None, out_file: str | Path | None, id_col: str = "id",
            text_col: str = "text") -> dict[str, Any]:
        """Read the corpus in batches of ``batch_docs`` documents, extract, write the rows."""
        started = time.perf_counter()
        entities: list[dict] = []
        relations: list[dict] = []
        docs = 0
        sentences, tokens, truncated = self.sentences, self.tokens, self.truncated
        for batch in pq.ParquetFile(corpus).iter_batches(batch_size=self.batch_docs, columns=[id_col, text_col]):
            ids, texts = batch.column(id_col).to_pylist(), batch.column(text_col).to_pylist()
            if limit is not None:
                ids, texts = ids[: limit - docs], texts[: limit - docs]
            ents, rels = self.extract(ids, texts)
            entities += ents
            relations += rels
            docs += len(ids)
            if limit is not None and docs >= limit:
                break
        if out_file is not None:
            pq.write_table(pa.Table.from_pylist(entities), Path(out_file))
        return {"documents": docs, "sentences": self.sentences - sentences, "tokens": self.tokens - tokens,
                "entities": len(entities), "relations": len(relations),
                "seconds": time.perf_counter() - started, "truncated_sentences": self.truncated - truncated}

    def batch_runner(self):
        """``run_batch`` for bench_measure.latency (no separate model time)."""

        def run(ids: list, texts: list) -> None:
            self.extract(ids, texts)

        return run

    def gpu_peak_mb(self) -> float | None:
        if self.device != "cuda":
            return None
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def torch_version() -> str:
    return torch.__version__


def warm_up(baseline: TorchBaseline, ids: list, texts: list) -> None:
    """A first forward on real data (allocator, thread pool), excluded from timings."""
    n = min(len(ids), baseline.batch_docs)
    if n:
        baseline.extract(ids[:n], texts[:n])
