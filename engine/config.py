"""The engine's settings in one frozen value, and the one place their automatic defaults
are worked out (:meth:`EngineConfig.resolved`).

The defaults follow docs/benchmarks.md; the code keeps only the rule, not the numbers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

from nere.engine.bundle import CUDA, stage1_recurrent
from nere.engine.errors import EngineError

BATCH_TOKENS = {"cpu": 2048, "cuda": 65536}  # padded tokens per stage-1 batch
RECURRENT_CPU_BATCH_TOKENS = 1024  # ... for a recurrent stage-1 graph on CPU
UNIT_DOCS = 1024  # documents per unit: rows are sorted by length within a unit
UNIT_CHARS = 2_000_000  # ... and at most about this many characters
PART_DOCS = 50_000  # documents per part file: a killed run redoes at most one part


@dataclass(frozen=True)
class EngineConfig:
    """How an :class:`~nere.engine.api.Engine` runs; ``None`` fields are filled by
    :meth:`resolved` from the bundles and the execution provider."""

    device: str = "auto"  # auto: CUDA when onnxruntime can use it, else CPU
    threads: int | None = None  # CPU threads in all; None: all cores
    streams: int | None = None  # stage-1 calls at once; None: auto_streams of the bundle
    re_streams: int | None = None  # a separate RE bundle's calls at once; None: auto_streams of it
    batch_tokens: int | None = None  # padded tokens per stage-1 batch; None: auto_batch_tokens
    max_doc_chars: int = 1_000_000  # longer documents are failed rows
    unit_docs: int = UNIT_DOCS  # documents per unit (the window sorted by length)
    unit_chars: int = UNIT_CHARS  # ... and about this many characters at most
    part_docs: int = PART_DOCS  # documents per part file of Engine.run
    tune_allocator: bool = False  # process-wide glibc malloc tuning: off for a library, on in `nere`
    line_breaks: str = "split"  # split: a line break ends a sentence; join: lines wrapped mid-sentence

    def __post_init__(self) -> None:
        for name in ("streams", "re_streams", "batch_tokens", "unit_docs", "unit_chars", "part_docs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise EngineError(f"{name} must be positive, got {value}")

    def with_overrides(self, **overrides: Any) -> "EngineConfig":
        """This config with some fields replaced (``Engine.load(path, threads=2)``)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise EngineError(f"unknown engine setting {unknown[0]!r} (settings: {', '.join(sorted(known))})")
        return replace(self, **overrides) if overrides else self

    def resolved(self, manifest: dict[str, Any] | None, re_manifest: dict[str, Any] | None = None,
                 provider: str | None = None) -> "EngineConfig":
        """The automatic defaults filled in: threads and streams from the manifests (no RE
        bundle: one RE stream); batch_tokens once the provider is known (it stays None
        without one: the sessions are opened with the streams' threads first)."""
        threads = int(self.threads or os.cpu_count() or 1)
        streams = self.streams if self.streams is not None else auto_streams(manifest, threads)
        re_streams = self.re_streams if self.re_streams is not None else auto_streams(re_manifest, threads)
        batch_tokens = self.batch_tokens
        if batch_tokens is None and provider is not None:
            batch_tokens = auto_batch_tokens(manifest, provider)
        return replace(self, threads=threads, streams=streams, re_streams=re_streams, batch_tokens=batch_tokens)

    @property
    def call_threads(self) -> int:
        """onnxruntime threads of each stage-1 session (a resolved config)."""
        return max(1, int(self.threads or 1) // int(self.streams or 1))

    @property
    def re_call_threads(self) -> int:
        """onnxruntime threads of each separate RE session (a resolved config)."""
        return max(1, int(self.threads or 1) // int(self.re_streams or 1))


def auto_streams(manifest: dict[str, Any] | None, threads: int) -> int:
    """Default model calls in flight: 2 on 2+ threads for the small encoders whose
    operators parallelise poorly inside one call (a recurrent stage-1 graph, or an encoder
    that reads no [CLS] token: the BiLSTM and ACNN kinds); 1 for BERT-style encoders,
    which use all threads well inside one call."""
    tokenizer = (manifest or {}).get("tokenizer")
    no_cls = isinstance(tokenizer, dict) and "cls_token" in tokenizer and tokenizer["cls_token"] is None
    return 2 if threads >= 2 and (stage1_recurrent(manifest) or no_cls) else 1


def auto_batch_tokens(manifest: dict[str, Any] | None, provider: str) -> int:
    """Default padded tokens per stage-1 batch: large on CUDA; on CPU small for a recurrent
    stage-1 graph, whose LSTM runs faster on small batches, and larger otherwise."""
    if provider == CUDA:
        return BATCH_TOKENS["cuda"]
    return RECURRENT_CPU_BATCH_TOKENS if stage1_recurrent(manifest) else BATCH_TOKENS["cpu"]
