"""Batching and the two onnxruntime stages.

- Rows (sentences or windows) are sorted by length and packed to a token budget
  (padded width x rows), so a batch of short sentences is large and a batch of long
  ones is small: no padding waste, no out-of-memory on long inputs.
- Padded widths are rounded up to a multiple of 8: fewer distinct shapes keeps
  onnxruntime's memory arena from growing with every new sequence length.
- On CUDA, stage 1 runs with IO binding and its ``hidden`` output stays on the GPU for
  stage 2 (only the emissions come back to the host).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from nere.engine.bundle import CUDA, ORT_TO_NUMPY, Graph
from nere.engine.core.features import scatter_batches
from nere.engine.core.featurize import Batch, Encoded, Featurizer, Tokens, expand_ranges
from nere.engine.errors import EngineError

WIDTH_STEP = 8
PAIR_BUDGET_FACTOR = 1  # stage-2 pair-positions per call, in units of batch_tokens
DECODE_GROUP_POSITIONS = 32768  # padded positions decoded together (8-32 CPU batches; a CUDA batch is larger
                                # and decodes alone, so no extra GPU memory is held)
STAGE1_JOB_POSITIONS = 4096  # padded positions of consecutive batches one worker runs in a row (one hand-off)


def bucket_width(n_tokens: np.ndarray | int, max_length: int) -> np.ndarray | int:
    """Padded width of a row of ``n_tokens`` tokens (specials included)."""
    return np.minimum(-(-np.asarray(n_tokens) // WIDTH_STEP) * WIDTH_STEP, max_length)


def plan_batches(lengths: np.ndarray, featurizer: Featurizer, budget: int) -> list[np.ndarray]:
    """Row indices per batch: sorted by length, each batch's rows x padded width <= budget
    (a single row wider than the budget still gets a batch of its own)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    widths = bucket_width(lengths[order] + featurizer.n_special, featurizer.max_length)
    batches: list[np.ndarray] = []
    start = 0
    for k in range(len(order)):  # widths ascend, so the newest row sets the batch width
        if k > start and (k - start + 1) * int(widths[k]) > budget:
            batches.append(order[start:k])
            start = k
    if start < len(order):
        batches.append(order[start:])
    return batches


def decode_groups(batches: Sequence[np.ndarray], row_tokens: np.ndarray, featurizer: Featurizer,
                  budget: int) -> list[list[int]]:
    """Consecutive batches decoded together: each group's rows x widest batch width stays
    within ``budget`` (a batch alone may exceed it). ``row_tokens``: content tokens per row."""
    groups: list[list[int]] = []
    rows = width = 0
    for k, b in enumerate(batches):
        w = _bucket_of(featurizer, int(row_tokens[b].max())) if len(b) else 0
        if groups and (rows + len(b)) * max(width, w) <= budget:
            groups[-1].append(k)
            rows, width = rows + len(b), max(width, w)
        else:
            groups.append([k])
            rows, width = len(b), w
    return groups


def collate(featurizer: Featurizer, items: Sequence[Encoded]) -> Batch:
    """The featurizer's padded batch, padded to the bucket width."""
    longest = max((len(it.ids) for it in items), default=0)
    return featurizer.collate(items, _bucket_of(featurizer, longest))


def collate_flat_many(featurizer: Featurizer, tokens: Tokens, starts: np.ndarray, counts: np.ndarray,
                      sizes: Sequence[int], extras: dict[str, np.ndarray] | None = None) -> list[Batch]:
    """:func:`collate` of token ranges of flat tokens, for consecutive runs of ``sizes`` rows
    (one unit's batches) at once, each padded to its own bucket width
    (``Featurizer.collate_flat_many``); without per-position offsets: the engine maps spans
    to characters through ``tokens`` itself. ``extras``: extra inputs with one row per flat
    token (``TokenFeatures.compute``), laid out in each batch like its input_ids."""
    counts = np.asarray(counts, dtype=np.int64)
    sizes_a = np.asarray(sizes, dtype=np.int64)
    longest = np.zeros(len(sizes_a), dtype=np.int64)
    filled = sizes_a > 0
    if filled.any():
        longest[filled] = np.maximum.reduceat(counts, (np.cumsum(sizes_a) - sizes_a)[filled])
    widths = bucket_width(longest + featurizer.n_special, featurizer.max_length)
    batches = featurizer.collate_flat_many(tokens.ids, None, starts, counts, sizes, widths)
    if extras:
        real = [b.input_ids.shape[1] for b in batches]
        for name, values in extras.items():
            for batch, part in zip(batches, scatter_batches(values, starts, counts, sizes, real, featurizer.lead)):
                batch.extras[name] = part
    return batches


def _bucket_of(featurizer: Featurizer, longest_content: int) -> int:
    return int(bucket_width(longest_content + featurizer.n_special, featurizer.max_length))


def run_stage1(graph: Graph, batch: Batch, outputs: Sequence[str]) -> dict[str, Any]:
    """Stage-1 outputs by name: numpy arrays, except ``hidden`` under IO binding, which
    stays an OrtValue on the device for stage 2."""
    feeds = {}
    for name, dtype in graph.inputs.items():
        if name == "input_ids":
            a = batch.input_ids
        elif name == "attention_mask":
            a = batch.attention_mask
        elif name == "token_type_ids":  # a single segment
            a = np.zeros_like(batch.input_ids)
        elif name in batch.extras:
            a = batch.extras[name]
        else:  # load_bundle checks a graph's inputs against its features: a caller forgot them
            raise EngineError(f"stage 1 of {graph.file} needs input {name!r}, which this batch lacks")
        feeds[name] = np.ascontiguousarray(a, dtype=dtype)
    if not graph.io_binding:
        return dict(zip(outputs, graph.session.run(list(outputs), feeds)))
    device = "cuda" if graph.provider == CUDA else "cpu"
    io = graph.session.io_binding()
    for name, a in feeds.items():
        io.bind_cpu_input(name, a)
    for name in outputs:
        io.bind_output(name, device if name == "hidden" else "cpu")
    graph.session.run_with_iobinding(io)
    values = io.get_outputs()
    return {n: (v if n == "hidden" else v.numpy()) for n, v in zip(outputs, values)}


def softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def span_scores(emissions: np.ndarray, tags: np.ndarray, rows: np.ndarray, starts: np.ndarray,
                ends: np.ndarray) -> np.ndarray:
    """Per span: the mean over its positions ``starts:ends`` of ``rows`` of the softmax
    probability of the decoded tag. Only the spans' own positions are exponentiated (most
    positions of a batch are outside every entity)."""
    lens = np.asarray(ends) - np.asarray(starts)
    span, pos = expand_ranges(np.asarray(starts), lens)
    r = np.asarray(rows)[span]
    prob = softmax(emissions[r, pos])[np.arange(len(r)), tags[r, pos]]  # (positions,)
    return np.add.reduceat(prob.astype(np.float64), np.cumsum(lens) - lens) / lens


def span_masks(starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """(P, width) float32 masks, 1.0 on positions [start, end) of each pair."""
    pos = np.arange(width)[None, :]
    return ((pos >= starts[:, None]) & (pos < ends[:, None])).astype(np.float32)


def run_stage2(
    graph: Graph,
    hidden: Any,
    width: int,
    rows: np.ndarray,
    head: tuple[np.ndarray, np.ndarray, np.ndarray],
    tail: tuple[np.ndarray, np.ndarray, np.ndarray],
    budget: int,
) -> np.ndarray:
    """Relation probabilities (P, relations) for pairs over one stage-1 batch.

    ``head``/``tail`` are (start positions, end positions, type ids) in stage-1
    positions. Pairs go in chunks of at most ``PAIR_BUDGET_FACTOR * budget``
    pair-positions: a stage-2 graph typically gathers a (pairs, seq, hidden) tensor and
    derives several more of that size, so a chunk is held to a stage-1 batch's
    positions; that keeps the relation stage's peak memory that of a stage-1 batch
    (docs/benchmarks.md), not a multiple of it.
    """
    chunk = max(1, PAIR_BUDGET_FACTOR * budget // max(width, 1))
    out_name = "logits" if "logits" in graph.outputs else next(iter(graph.outputs))
    if isinstance(hidden, ort.OrtValue) and ORT_TO_NUMPY.get(hidden.data_type()) != graph.inputs["hidden"]:
        hidden = hidden.numpy()  # dtypes differ (e.g. fp16 stage 1, fp32 stage 2): cast on the host
    out = []
    for lo in range(0, len(rows), chunk):
        sl = slice(lo, lo + chunk)
        values = {
            "pair_index": rows[sl],
            "head_mask": span_masks(head[0][sl], head[1][sl], width),
            "tail_mask": span_masks(tail[0][sl], tail[1][sl], width),
            "head_type": head[2][sl],
            "tail_type": tail[2][sl],
        }
        feeds = {n: np.ascontiguousarray(values[n], dtype=t) for n, t in graph.inputs.items() if n != "hidden"}
        if isinstance(hidden, ort.OrtValue):
            io = graph.session.io_binding()
            io.bind_ortvalue_input("hidden", hidden)
            for name, a in feeds.items():
                io.bind_cpu_input(name, a)
            io.bind_output(out_name, "cpu")
            graph.session.run_with_iobinding(io)
            logits = io.get_outputs()[0].numpy()
        else:
            feeds["hidden"] = np.ascontiguousarray(hidden, dtype=graph.inputs["hidden"])
            logits = graph.session.run([out_name], feeds)[0]
        out.append(softmax(logits))
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


class StageObserver:
    """A hook around every model call of a :class:`~nere.engine.pipeline.Pipeline`
    (timing, recording): override :meth:`stage1`/:meth:`stage2` and call these to run the
    call itself. Without an observer the pipeline calls the stage functions directly."""

    def stage1(self, graph: Graph, batch: Batch, outputs: Sequence[str]) -> dict[str, Any]:
        return run_stage1(graph, batch, outputs)

    def stage2(self, graph: Graph, hidden: Any, width: int, rows: np.ndarray,
               head: tuple[np.ndarray, np.ndarray, np.ndarray], tail: tuple[np.ndarray, np.ndarray, np.ndarray],
               budget: int) -> np.ndarray:
        return run_stage2(graph, hidden, width, rows, head, tail, budget)
