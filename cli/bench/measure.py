"""Timed passes of one Engine over a corpus: end to end, model only, per-batch latency.

"Model only" is the ONNX work alone (stage 1, and stage 2 for relation bundles) on inputs
that are already tokenized, batched and padded exactly as the engine does it. To get
those inputs without a second implementation of batching or pair building, a
:class:`Recorder` observes the engine pipeline's model calls (its ``StageObserver`` hook)
during one pass, records every call with its arguments, and replays them later with
nothing else running. The same pass times each phase of the pipeline serially (read,
prepare, stage 1, stage 2, decode/assemble, Parquet encoding): where the time goes.

Imports only the engine (no torch).
"""
from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import nere.engine.pipeline as pipeline_module
from nere.cpu_clock import CallClock
from nere.engine.api import UNIT_CHARS, UNIT_DOCS, Engine
from nere.engine.parquet_io import iter_units, open_inputs, resolve_inputs
from nere.engine.pipeline import Pipeline
from nere.engine.stages import StageObserver, run_stage1, run_stage2


RECENT_STAGE1 = 256  # stage-1 outputs a stage-2 call may refer to without a copy


@dataclass
class CorpusStats:
    """What one pass over the corpus (or its first ``limit`` rows) contains."""

    documents: int = 0
    failed: int = 0
    sentences: int = 0
    rows: int = 0  # model rows (sentences, or windows of long ones)
    tokens: int = 0  # content tokens fed to stage 1
    characters: int = 0
    entities: int = 0
    relations: int = 0

    def add(self, prep: Any, result: Any) -> None:
        self.documents += len(prep.unit.texts)
        self.failed += len(prep.failures)
        self.sentences += len(prep.tokens)
        self.rows += len(prep.row_n)
        self.tokens += prep.n_tokens
        self.characters += sum(len(t) for t in prep.texts if t)
        self.entities += result.entities.num_rows
        self.relations += result.relations.num_rows


class Recorder(StageObserver):
    """Observes a pipeline's model calls: runs them, times them, and keeps their
    arguments so :meth:`replay` can run the same model work alone."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.calls: list[tuple[str, tuple, int | None]] = []  # (stage, args, index of the stage-1 call feeding it)
        self.seconds = {"stage1": 0.0, "stage2": 0.0}
        self.batches = {"stage1": 0, "stage2": 0}
        # (call index, id of its hidden states) of the latest stage-1 calls. Ids, not the
        # objects: nothing is kept alive. The newest entry with a given id is the live object
        # (an id is only reused after its first owner was freed).
        self._recent: list[tuple[int, int]] = []

    def stage1(self, graph, batch, outputs):
        t = time.perf_counter()
        out = super().stage1(graph, batch, outputs)
        self.seconds["stage1"] += time.perf_counter() - t
        self.batches["stage1"] += 1
        if self.keep:
            self.calls.append(("stage1", (graph, batch, tuple(outputs)), None))
            if "hidden" in out:  # the pipeline decodes a group of batches at a time: keep a few
                self._recent = [*self._recent[-(RECENT_STAGE1 - 1):], (len(self.calls) - 1, id(out["hidden"]))]
        return out

    def stage2(self, graph, hidden, width, rows, head, tail, budget):
        t = time.perf_counter()
        out = super().stage2(graph, hidden, width, rows, head, tail, budget)
        self.seconds["stage2"] += time.perf_counter() - t
        self.batches["stage2"] += 1
        if self.keep:
            ref = next((k for k, h in reversed(self._recent) if h == id(hidden)), None)
            kept = None if ref is not None else np.array(hidden.numpy() if hasattr(hidden, "numpy") else hidden)
            self.calls.append(("stage2", (graph, kept, width, rows, head, tail, budget), ref))
        return out

    @contextmanager
    def attached(self, pipeline: Pipeline) -> Iterator["Recorder"]:
        """Observe ``pipeline``'s model calls with this recorder (its own observer restored on exit)."""
        saved = pipeline.observer
        pipeline.observer = self
        try:
            yield self
        finally:
            pipeline.observer = saved

    @property
    def model_seconds(self) -> float:
        return self.seconds["stage1"] + self.seconds["stage2"]

    def replay(self, streams: int = 1, lanes: dict[int, int] | None = None) -> float:
        """Seconds to run every recorded stage call again, and nothing else: each stage-1
        call with the stage-2 calls that read its outputs, ``streams`` of those at once
        (as many as the engine keeps in flight). ``lanes`` maps ``id(graph)`` of a
        separate RE bundle's graphs to that bundle's calls at once (the engine's
        ``re_streams``, each call on its own share of the threads): their jobs run after
        the others, at that concurrency, so no replayed call has more threads beside it
        than the engine gives it (more would slow the replay below the engine itself)."""
        jobs: list[list[tuple[str, tuple, int | None]]] = []
        job_of: dict[int, int] = {}  # stage-1 call index -> its job
        for k, call in enumerate(self.calls):
            if call[0] == "stage2" and call[2] is not None:
                jobs[job_of[call[2]]].append(call)  # reads that stage-1 call's hidden states
                continue
            job_of[k] = len(jobs)
            jobs.append([call])  # a stage-1 call, or a stage-2 call with its own copy of the hidden states
        lanes = lanes or {}
        by_lane: dict[tuple[bool, int], list[list[tuple[str, tuple, int | None]]]] = {}
        for job in jobs:
            graph = id(job[0][1][0])  # the job's first call's graph
            by_lane.setdefault((graph in lanes, lanes.get(graph, streams)), []).append(job)
        started = time.perf_counter()
        for key in sorted(by_lane):  # the main lane (False) first
            lane, width = by_lane[key], key[1]
            if width <= 1 or len(lane) < 2:
                for job in lane:
                    _run_job(job)
            else:
                with ThreadPoolExecutor(max_workers=width) as pool:
                    list(pool.map(_run_job, lane))
        return time.perf_counter() - started


def _run_job(job: list[tuple[str, tuple, int | None]]) -> None:
    last: dict = {}
    for stage, args, _ in job:
        if stage == "stage1":
            last = run_stage1(*args)
            continue
        graph, kept, width, rows, head, tail, budget = args
        run_stage2(graph, last["hidden"] if kept is None else kept, width, rows, head, tail, budget)


@dataclass
class Profile:
    """One serial pass: corpus counts, per-phase seconds, and the recorded model calls."""

    stats: CorpusStats
    phases: dict[str, float]
    recorder: Recorder
    batches: dict[str, int] = field(default_factory=dict)


def profile_pass(engine: Engine, corpus: str | Path, limit: int | None, id_col: str = "id",
                 text_col: str = "text") -> Profile:
    """Run the corpus through the pipeline one phase at a time (no overlap), timing each;
    the stage calls are recorded for :meth:`Recorder.replay`."""
    files = open_inputs(resolve_inputs([corpus]), id_col, text_col)
    units = iter_units(files, id_col, text_col, UNIT_DOCS, UNIT_CHARS, limit)
    phases = dict.fromkeys(("read", "prepare", "stage1", "stage2", "decode_assemble", "parquet_encode"), 0.0)
    stats = CorpusStats()
    recorder = Recorder()
    pipe = engine.pipeline
    while True:
        t0 = time.perf_counter()
        item = next(units, None)
        t1 = time.perf_counter()
        phases["read"] += t1 - t0
        if item is None:
            break
        prep = pipe.prepare(item[1])
        t2 = time.perf_counter()
        before = recorder.model_seconds
        with recorder.attached(pipe):
            result = pipe.infer(prep, overlap=False)
        t3 = time.perf_counter()
        for table in (result.entities, result.relations):
            pq.write_table(table, pa.BufferOutputStream())
        t4 = time.perf_counter()
        phases["prepare"] += t2 - t1
        phases["decode_assemble"] += (t3 - t2) - (recorder.model_seconds - before)
        phases["parquet_encode"] += t4 - t3
        stats.add(prep, result)
    phases["stage1"], phases["stage2"] = recorder.seconds["stage1"], recorder.seconds["stage2"]
    phases["total"] = sum(phases.values())
    return Profile(stats, {k: round(v, 4) for k, v in phases.items()}, recorder, dict(recorder.batches))


def end_to_end(engine: Engine, corpus: str | Path, limit: int | None, out_dir: Path, id_col: str = "id",
               text_col: str = "text", cpu: dict[str, float] | None = None) -> tuple[float, dict[str, Any]]:
    """Seconds for ``Engine.run`` (read -> tables written as Parquet) and its summary;
    with ``cpu``, also the run's process CPU seconds and the thread CPU seconds inside its
    model calls (``cpu["process"]``, ``cpu["model"]``; see :func:`cpu_split_note`), and the
    seconds before its first model call and after its last (``cpu["before_model"]``,
    ``cpu["after_model"]``) and the wall seconds inside model calls over all threads
    between the two (``cpu["model_wall"]``, ``cpu["model_window"]``): wall time, measured
    whatever the threads."""
    shutil.rmtree(out_dir, ignore_errors=True)
    clock = CallClock()
    with clock.attached(pipeline_module, ["run_stage1", "run_stage2"], "model") if cpu is not None else nullcontext():
        cpu0 = time.process_time()
        started = time.perf_counter()
        summary = engine.run(corpus, out_dir, id_col=id_col, text_col=text_col, limit=limit, progress=False,
                             overwrite=True)
        ended = time.perf_counter()
        seconds = ended - started
        if cpu is not None:
            cpu.update(process=time.process_time() - cpu0, model=clock.seconds["model"])
            if "model" in clock.span:
                first, last = clock.span["model"]
                cpu.update(before_model=first - started, after_model=ended - last,
                           model_wall=clock.wall["model"], model_window=last - first)
    shutil.rmtree(out_dir, ignore_errors=True)
    return seconds, summary


def cpu_split_note(engine: Engine) -> str | None:
    """Why the model's CPU cannot be told apart from the engine's for this engine (None
    when it can): only a CPU onnxruntime call on one intra-op thread runs wholly in the
    calling thread."""
    d = engine.describe()
    if d["provider"] != "CPUExecutionProvider":
        return f"provider {d['provider']}: the model's work is not CPU time"
    if d["threads_per_stream"] != 1:
        return f"{d['threads_per_stream']} intra-op threads per call: onnxruntime's pool threads escape the thread clock"
    if d.get("re_bundle") and d.get("re_threads_per_stream") != 1:
        return (f"{d.get('re_threads_per_stream')} intra-op threads per separate RE call: onnxruntime's pool "
                "threads escape the thread clock")
    return None


def read_documents(corpus: str | Path, n: int, id_col: str = "id", text_col: str = "text") -> tuple[list, list]:
    """The first ``n`` (ids, texts) of a Parquet corpus, for latency batches."""
    pf = pq.ParquetFile(corpus)
    ids: list = []
    texts: list = []
    for batch in pf.iter_batches(batch_size=min(max(n, 1), 65536), columns=[id_col, text_col]):
        ids += batch.column(id_col).to_pylist()
        texts += batch.column(text_col).to_pylist()
        if len(ids) >= n:
            break
    return ids[:n], texts[:n]


def percentiles(ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=np.float64)
    if not len(a):
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None}
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3),
            "mean_ms": round(float(a.mean()), 3)}


def batch_slices(n_docs: int, size: int) -> Iterator[slice]:
    """Endless consecutive slices of ``size`` documents, wrapping around the corpus."""
    start = 0
    while True:
        if start + size > n_docs:
            start = 0
        yield slice(start, start + size)
        start += size


def latency(runners: dict[str, Any], ids: list, texts: list, size: int, seconds: float, min_samples: int,
            max_samples: int) -> dict[str, dict[str, Any]]:
    """Per-batch latency of each ``run_batch(ids, texts) -> model seconds or None`` on the
    same batches of ``size`` documents. Runners take turns batch by batch (load drift hits
    them alike): one warm-up call each, then rounds until ``seconds`` per runner have
    passed (at least ``min_samples``, at most ``max_samples`` rounds)."""
    if size > len(ids):
        return {name: {"batch_size": size, "samples": 0, "skipped": f"corpus has only {len(ids)} documents"}
                for name in runners}
    slices = batch_slices(len(ids), size)
    first = next(slices)
    for run_batch in runners.values():
        run_batch(ids[first], texts[first])  # warm-up: first shapes, arena growth
    total: dict[str, list[float]] = {name: [] for name in runners}
    model: dict[str, list[float]] = {name: [] for name in runners}
    budget_end = time.perf_counter() + seconds * len(runners)
    rounds = 0
    while rounds < max_samples and (rounds < min_samples or time.perf_counter() < budget_end):
        s = next(slices)
        for name, run_batch in runners.items():
            t = time.perf_counter()
            m = run_batch(ids[s], texts[s])
            total[name].append((time.perf_counter() - t) * 1000)
            if m is not None:
                model[name].append(m * 1000)
        rounds += 1
    out = {}
    for name in runners:
        out[name] = {"batch_size": size, "samples": len(total[name]), **percentiles(total[name])}
        if model[name]:
            out[name]["model"] = percentiles(model[name])
    return out


def engine_batch_runner(engine: Engine, id_col: str = "id", text_col: str = "text"):
    """``run_batch`` for :func:`latency`: ``Engine.extract_all`` on the documents; returns
    the seconds spent in the model stages during the call."""

    def run(ids: list, texts: list) -> float:
        rec = Recorder(keep=False)
        with rec.attached(engine.pipeline):
            engine.extract_all({id_col: ids, text_col: texts}, id_col, text_col)
        return rec.model_seconds

    return run


def rates(stats: CorpusStats, seconds: float) -> dict[str, Any]:
    """Documents, sentences and tokens per second for one pass over ``stats``."""
    s = max(seconds, 1e-12)
    return {"seconds": round(seconds, 4), "documents_per_s": round(stats.documents / s, 2),
            "sentences_per_s": round(stats.sentences / s, 2), "tokens_per_s": round(stats.tokens / s, 1)}
