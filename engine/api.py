"""The engine's Python API; the CLI (``nere extract``) is a thin layer over it.

    from nere.engine import Engine
    engine = Engine.load("artifacts/bundles/conll04-joint", device="cpu", threads=2)  # or config=EngineConfig(...)
    entities, relations = engine.extract(table)                # in memory
    summary = engine.run(["corpus/"], "out/", resume=True)     # streaming, resumable
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import pyarrow as pa

from nere.engine import allocator
from nere.engine.bundle import Bundle, load_bundle
from nere.engine.config import (  # noqa: F401  (auto_* and the sizes are read from here too)
    PART_DOCS,
    UNIT_CHARS,
    UNIT_DOCS,
    EngineConfig,
    auto_batch_tokens,
    auto_streams,
)
from nere.engine.errors import EngineError
from nere.engine.manifest import read_manifest_json
from nere.engine.parquet_io import (
    EDGE_DOCS,
    OUTPUTS,
    RunState,
    background,
    edge_cuts,
    iter_units,
    open_inputs,
    resolve_inputs,
    units_of_batch,
)
from nere.engine.pipeline import Pipeline, Unit, UnitResult
from nere.engine.stages import StageObserver
from nere.engine.tables import entity_schema, failure_schema, relation_schema

FAILURE_SAMPLE = 100  # failures listed in the summary (all are in failures/)


def _manifest(bundle: Bundle | str | Path) -> dict[str, Any] | None:
    return bundle.manifest if isinstance(bundle, Bundle) else read_manifest_json(bundle)


@dataclass
class Extraction:
    """Everything :meth:`Engine.extract_all` produces for an in-memory input."""

    entities: pa.Table
    relations: pa.Table
    failures: pa.Table
    stats: dict[str, int] = field(default_factory=dict)


class Engine:
    """An NER or joint bundle, optionally with a separate RE bundle, ready to run."""

    def __init__(self, bundle: Bundle | str | Path, re_bundle: Bundle | str | Path | None = None,
                 config: EngineConfig | None = None, *, observer: StageObserver | None = None,
                 **overrides: Any) -> None:
        """``config`` (:class:`EngineConfig`), with ``overrides`` replacing its fields
        (``Engine(path, threads=2)``). Each stage-1 session gets ``threads // streams``
        threads, each separate RE session ``threads // re_streams``; a ``Bundle`` passed in
        already loaded keeps the threads its sessions were opened with. ``observer`` sees
        every model call (timing, recording)."""
        config = (config or EngineConfig()).with_overrides(**overrides)
        if re_bundle is None and config.re_streams is not None:
            raise EngineError("re_streams sets a separate RE bundle's calls at once: give the RE bundle too (--re-model)")
        if config.tune_allocator:
            allocator.tune_allocator()
        plan = config.resolved(_manifest(bundle), _manifest(re_bundle) if re_bundle is not None else None)
        if not isinstance(bundle, Bundle):
            bundle = load_bundle(bundle, config.device, plan.call_threads)
        if re_bundle is not None and not isinstance(re_bundle, Bundle):
            re_bundle = load_bundle(re_bundle, config.device, plan.re_call_threads)
        self.bundle, self.re_bundle, self.config = bundle, re_bundle, config
        self.pipeline = Pipeline(bundle, re_bundle, plan, observer)

    @classmethod
    def load(cls, bundle: str | Path, re_bundle: str | Path | None = None, config: EngineConfig | None = None,
             **overrides: Any) -> "Engine":
        """Load and verify the bundle(s); raises BundleError/EngineError with one line."""
        return cls(bundle, re_bundle, config, **overrides)

    @property
    def device(self) -> str:
        return self.config.device

    @property
    def threads(self) -> int | None:
        return self.config.threads

    @property
    def streams(self) -> int:
        return self.pipeline.streams

    @property
    def re_streams(self) -> int:
        return self.pipeline.re_streams

    @property
    def call_threads(self) -> int:
        return self.pipeline.config.call_threads

    @property
    def re_call_threads(self) -> int:
        return self.pipeline.config.re_call_threads

    @property
    def provider(self) -> str:
        """The execution provider onnxruntime actually uses (read back from the session)."""
        return self.bundle.provider

    @property
    def batch_tokens(self) -> int:
        return self.pipeline.batch_tokens

    def describe(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "device": self.device,
            "threads": self.threads or os.cpu_count(),
            "streams": self.streams,
            "threads_per_stream": self.call_threads,
            "re_streams": self.re_streams if self.re_bundle is not None else None,
            "re_threads_per_stream": self.re_call_threads if self.re_bundle is not None else None,
            "batch_tokens": self.batch_tokens,
            "allocator": allocator.allocator_settings(),
            "provider_notes": self.bundle.notes + (self.re_bundle.notes if self.re_bundle else []),
            "bundle": self.bundle.describe(),
            "re_bundle": self.re_bundle.describe() if self.re_bundle else None,
        }

    # ------------------------------------------------------------------ in memory
    def extract(self, data: Any, id_col: str = "id", text_col: str = "text") -> tuple[pa.Table, pa.Table]:
        """(entities, relations) for a table, record batches, a list of texts, a dict of
        columns or a Parquet path. Bad rows are skipped; see :meth:`extract_all`."""
        out = self.extract_all(data, id_col, text_col)
        return out.entities, out.relations

    def extract_all(self, data: Any, id_col: str = "id", text_col: str = "text") -> Extraction:
        """Like :meth:`extract`, plus the failed rows (doc_id, source, row, reason) and counts."""
        units = iter(self._units(data, id_col, text_col))
        results: list[UnitResult] = []
        id_type = None
        first = list(islice(units, 2))
        done: Iterable[tuple[Unit, UnitResult]] = []
        if len(first) < 2:  # one unit (the online case): no reader thread, and no model thread for one batch
            for unit in first:
                prep = self.pipeline.prepare(unit)
                done = [(unit, self.pipeline.infer(prep, overlap=len(prep.batches) > 1))]
        else:
            done = self.pipeline.infer_stream(background((u, self.pipeline.prepare(u)) for u in chain(first, units)))
        for unit, result in done:
            id_type = unit.ids.type
            results.append(result)
        id_type = id_type or pa.int64()
        schemas = {"entities": entity_schema(id_type), "relations": relation_schema(id_type),
                   "failures": failure_schema(id_type)}
        tables = {t: pa.concat_tables([getattr(r, t) for r in results]) if results else schemas[t].empty_table()
                  for t in OUTPUTS}
        stats = {k: sum(getattr(r, k) for r in results) for k in ("documents", "failed", "cleaned", "tokens")}
        return Extraction(tables["entities"], tables["relations"], tables["failures"], stats)

    def _units(self, data: Any, id_col: str, text_col: str) -> Iterator[Unit]:
        if isinstance(data, (str, Path)):
            inputs = open_inputs(resolve_inputs([data]), id_col, text_col)
            return (u for _, u in iter_units(inputs, id_col, text_col, self.config.unit_docs, self.config.unit_chars))
        if isinstance(data, (list, tuple)) and all(not isinstance(x, (pa.RecordBatch, pa.Table)) for x in data):
            data = {id_col: list(range(len(data))), text_col: list(data)}
        if isinstance(data, dict):
            missing = [c for c in (id_col, text_col) if c not in data]
            if missing:
                raise EngineError(f"input dict has no column {missing[0]!r} (it has {', '.join(map(str, data))})")
            ids, texts = pa.array(data[id_col]), list(data[text_col])
            if len(ids) != len(texts):
                raise EngineError(f"columns {id_col!r} and {text_col!r} differ in length")
            n = len(texts)
            size = self.config.unit_docs
            cuts = [(a, min(a + size, n)) for a in range(0, n, size)]
            if len(cuts) > 1:
                cuts = edge_cuts(cuts, EDGE_DOCS, EDGE_DOCS)
            return (Unit(ids.slice(a, b - a), texts[a:b], "<table>", a) for a, b in cuts)
        batches = [data] if isinstance(data, (pa.Table, pa.RecordBatch)) else data
        return self._units_of_batches(batches, id_col, text_col)

    def _units_of_batches(self, batches: Iterable[Any], id_col: str, text_col: str) -> Iterator[Unit]:
        """The units of each record batch in turn; the first and the last unit of an input
        of several units are small, as :func:`iter_units` cuts them (one batch looked ahead)."""
        row, cfg = 0, self.config
        ahead = iter(batches)
        batch = next(ahead, None)
        while batch is not None:
            if not isinstance(batch, (pa.Table, pa.RecordBatch)):
                raise EngineError(f"cannot read input of type {type(batch).__name__}: give a pyarrow Table, "
                                  "RecordBatches, a list of texts, a dict of columns or a Parquet path")
            for col in (id_col, text_col):
                if col not in batch.schema.names:
                    raise EngineError(f"input table has no column {col!r} (it has {', '.join(batch.schema.names)})")
            following = next(ahead, None)
            several = following is not None or row > 0 or batch.num_rows > cfg.unit_docs
            lead = EDGE_DOCS if several and row == 0 else 0
            tail = EDGE_DOCS if several and following is None else 0
            yield from units_of_batch(batch, id_col, text_col, cfg.unit_docs, cfg.unit_chars, "<table>", row, lead, tail)
            row += batch.num_rows
            batch = following

    # ------------------------------------------------------------------ streaming
    def run(
        self,
        inputs: str | Path | Sequence[str | Path],
        out_dir: str | Path,
        id_col: str = "id",
        text_col: str = "text",
        resume: bool = False,
        overwrite: bool = False,
        limit: int | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Stream Parquet inputs into ``out_dir``/{entities,relations,failures}/part-*.parquet
        (units and parts sized by the config).

        Memory stays bounded (one unit being read, one being run, one part's rows
        buffered up to a row group). Returns the summary, also written to summary.json.
        """
        started = time.perf_counter()
        if isinstance(inputs, (str, Path)):
            inputs = [inputs]
        if limit is not None and limit < 1:
            raise EngineError(f"limit must be positive, got {limit}")
        files = open_inputs(resolve_inputs(inputs), id_col, text_col)
        state = RunState(Path(out_dir), self._run_config(files, id_col, text_col, limit), resume, overwrite)
        total = sum(f.rows for f in files)
        total = min(total, limit) if limit is not None else total
        done_before = state.documents_done
        bar = _progress_bar(total, done_before, progress)
        try:
            docs, tokens = self._write_parts(state, files, id_col, text_col, limit, bar, started)
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - started
        try:
            summary = self._summary(state, seconds, docs, tokens, done_before)
            state.write_summary(summary)
        finally:
            state.release()  # the folder's lock, taken by RunState: another run may open it now
        return summary

    def _run_config(self, files: list, id_col: str, text_col: str, limit: int | None) -> dict[str, Any]:
        """What a resumed run must share with the run it continues."""
        cfg = self.config
        return {
            "inputs": [{"path": str(f.path.resolve()), "rows": f.rows, "bytes": f.size} for f in files],
            "id_col": id_col, "text_col": text_col, "limit": limit,
            "bundle_sha256": self.bundle.sha256,
            "re_bundle_sha256": self.re_bundle.sha256 if self.re_bundle else None,
            "batch_tokens": self.batch_tokens, "max_doc_chars": self.pipeline.max_doc_chars,
            "part_docs": cfg.part_docs, "unit_docs": cfg.unit_docs, "unit_chars": cfg.unit_chars,
            "line_breaks": cfg.line_breaks,
        }

    def _write_parts(self, state: RunState, files: list, id_col: str, text_col: str, limit: int | None,
                     bar: Any, started: float) -> tuple[int, int]:
        """Run the units not done yet into part files; (documents, tokens) this run. A part
        left unfinished by an error is removed."""
        id_type = files[0].id_type
        schemas = {"entities": entity_schema(id_type), "relations": relation_schema(id_type),
                   "failures": failure_schema(id_type)}
        cfg = self.config
        docs = tokens = 0
        part = None
        try:
            if not state.complete:
                units = iter_units(files, id_col, text_col, cfg.unit_docs, cfg.unit_chars, limit, state.done)
                prepared = background(((fi, u), self.pipeline.prepare(u)) for fi, u in units)
                for (fi, unit), result in self.pipeline.infer_stream(prepared):
                    part = part or state.new_part(schemas)
                    part.add(fi, unit, result)
                    if part.stats["documents"] >= cfg.part_docs:
                        state.commit(part)
                        part = None
                    docs += result.documents
                    tokens += result.tokens
                    if bar is not None:
                        elapsed = max(time.perf_counter() - started, 1e-9)
                        bar.update(result.documents)
                        bar.set_postfix_str(f"{docs / elapsed:,.0f} docs/s, {tokens / elapsed:,.0f} tok/s", refresh=False)
                if part is not None:
                    state.commit(part)
                    part = None
                state.finish(schemas)  # no input rows: one empty part with each table's schema
        except BaseException:
            if part is not None:
                part.abort()
            state.discard_if_empty()  # and unlock
            raise
        return docs, tokens

    def _summary(self, state: RunState, seconds: float, docs: int, tokens: int, done_before: int) -> dict[str, Any]:
        t = state.totals()
        return {
            "documents_read": t["documents"],
            "documents_written": t["documents"] - t["failed"],
            "documents_failed": t["failed"],
            "failure_reasons": t["failure_reasons"],
            "failures": state.failure_sample(FAILURE_SAMPLE),
            "failures_table": str(state.folder / "failures"),
            "documents_with_control_chars_replaced": t["cleaned"],
            "entities": t["entities"],
            "relations": t["relations"],
            "tokens": t["tokens"],
            "seconds": round(seconds, 3),
            "documents_this_run": docs,
            "documents_before_resume": done_before,
            "documents_per_second": round(docs / seconds, 1) if seconds > 0 else None,
            "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
            "resumed": state.resumed,
            "parts": len(state.parts),
            "out_dir": str(state.folder),
            "inputs": [i["path"] for i in state.config["inputs"]],
            **self.describe(),
        }


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="doc", desc="extract", dynamic_ncols=True, mininterval=0.5)
