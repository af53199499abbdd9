"""Precision variants of an exported fp32 graph: int8 (CPU) and fp16 (GPU).

int8 is onnxruntime's dynamic quantization, per channel, of MatMuls whose second input
is a weight (attention-score MatMuls multiply two activations and stay fp32), of LSTMs
and of large embedding tables (Gather). Some
weights are left in fp32 because quantizing them costs the most accuracy (see
``INT8_POLICIES``); every variant's F1 is measured by ``nere export --verify``, so the
policy is a measured choice, not a guess. Two policies quantize every weight MatMul with
help from calibration batches (stage-1 inputs of training sentences): ``full-smooth``
smooths the FFN denses' inputs first (export/smoothing.py), ``full-static`` fixes the
activation scales from them (QDQ, export/quantize_static.py). Quantization pre-processing runs inside a
temporary directory: onnxruntime's shape inference drops temp files in the working
directory when it fails.

fp16 is onnxruntime.transformers' float16 converter with float32 inputs/outputs kept, so
the engine feeds and reads the same dtypes as in fp32.
"""
from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import onnx

from nere.engine.manifest import PRECISIONS

# which weight MatMuls stay fp32 in int8 bundles: policy -> (groups kept fp32, description)
_POLICIES = {
    "none": ((), "quantize every weight MatMul"),
    "head": (("head",), "keep the task heads fp32 (weights outside /encoder/: classifier, RE stage 2, the recurrent/conv RE kinds' per-sentence projections)"),
    "head+ffn-out": (("head", "ffn-out"), "also keep each transformer layer's FFN output dense fp32"),
    "head+ffn": (("head", "ffn-out", "ffn-in"), "also keep both FFN denses (intermediate and output) fp32"),
    "head+ffn+attn-out": (("head", "ffn-out", "ffn-in", "attn-out"),
                          "also keep both FFN denses and the attention output dense fp32"),
    "embeddings": (("all",), "every MatMul fp32, only embedding tables (and LSTMs) int8: auto's last resort, "
                             "and a bound on what the tables alone cost"),
    "full-smooth": ((), "quantize every weight MatMul (as none) after smoothing the FFN denses' inputs "
                        "(SmoothQuant) with ranges measured on training sentences"),
    "full-static": ((), "quantize every weight MatMul statically (QDQ, weights at 7 bits), activation ranges "
                        "calibrated on training sentences"),
}
INT8_POLICIES = {name: desc for name, (_, desc) in _POLICIES.items()}
# policies that read calibration batches (stage-1 inputs of training sentences); a graph the
# batches do not feed (RE stage 2: pair inputs) is quantized dynamically as under none
_STATIC = {"full-static"}
_SMOOTHED = {"full-smooth": 0.75}  # policy -> SmoothQuant alpha
DEFAULT_INT8_POLICY = "head+ffn"
# `--int8-policy auto`: fastest first; the first whose F1 loss against the fp32 bundle through
# the engine on dev stays within AUTO_DEV_SHARE of the int8 tolerance is kept, else the most
# accurate measured (most_accurate_policy). A share of the tolerance because on small dev and
# test splits the same bundle's loss moves between the splits (docs/results.md, "int8 policy").
AUTO_INT8_CANDIDATES = ("none", "full-smooth", "head+ffn-out", "head+ffn", "embeddings")
# "embeddings" (every MatMul fp32) is the last resort: tried only when the faster ones all
# fail on dev; when every candidate fails, auto keeps the one whose worst dev difference is
# smallest.
# "none" is tried for the recurrent and convolutional kinds only: there every weight MatMul
# outside the (LSTM or embedding) encoder is stage 1's per-sentence projection or stage 2's
# per-pair work, which the other policies leave in fp32. For transformer encoders it
# quantizes the FFN denses unsmoothed, which costs more than the tolerance, and a small dev
# split can pass it by chance (docs/results.md, "int8 policy"); "full-smooth" quantizes the
# same MatMuls with the FFN inputs smoothed, and only transformers have FFN denses.
_AUTO_SKIP = {"bert": ("none",)}
_AUTO_ONLY = {"full-smooth": ("bert",)}


def most_accurate_policy(tried: list[dict[str, Any]]) -> str:
    """Of auto's measured candidates (``{"policy", "engine_loss": {table: loss}}``, fastest
    first), the one whose worst dev loss against fp32 is smallest; the faster of equals. An
    RE-only model's candidates carry ``f1_diff`` (vs PyTorch on gold entities) instead."""
    if not tried:
        raise ValueError("no int8 policy was measured")
    return min(tried, key=lambda t: max((t.get("engine_loss") or t["f1_diff"]).values(), default=0.0))["policy"]


def auto_int8_candidates(encoder_type: str) -> tuple[str, ...]:
    """The policies ``--int8-policy auto`` tries, fastest first, for a model of this encoder type."""
    return tuple(p for p in AUTO_INT8_CANDIDATES if p not in _AUTO_SKIP.get(encoder_type, ())
                 and encoder_type in _AUTO_ONLY.get(p, (encoder_type,)))
AUTO_DEV_SHARE = 0.5
VOCAB_TABLE_ROWS = 2048  # more rows than any position table (BERT: 512): a vocabulary

log = logging.getLogger(__name__)


@contextmanager
def _in_dir(path: str) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _is_head(name: str) -> bool:
    return "/encoder/" not in name


def _is_ffn_out(name: str) -> bool:
    return "/output/dense/" in name and "/attention/" not in name


def _is_ffn_in(name: str) -> bool:
    return "/intermediate/dense/" in name


def _is_attn_out(name: str) -> bool:
    return "/attention/output/dense/" in name


_GROUP_TESTS = {"head": _is_head, "ffn-out": _is_ffn_out, "ffn-in": _is_ffn_in, "attn-out": _is_attn_out,
                "all": lambda name: True}


def int8_plan(model: onnx.ModelProto, policy: str = DEFAULT_INT8_POLICY, lstm: bool = True) -> dict[str, list[str]]:
    """Names of the nodes to quantize and of the weight nodes kept fp32 under ``policy``."""
    if policy not in INT8_POLICIES:
        raise ValueError(f"unknown int8 policy {policy!r}; choose one of {', '.join(INT8_POLICIES)}")
    weights = {i.name for i in model.graph.initializer}
    # vocabulary tables (a BERT's word pieces, a BiLSTM's characters, bigrams or words: most
    # of a small model's bytes) go int8 per row; small tables (positions, types) stay fp32
    big_tables = {i.name for i in model.graph.initializer
                  if len(i.dims) == 2 and i.dims[0] >= VOCAB_TABLE_ROWS and i.dims[0] * i.dims[1] >= 65_536}
    quantize, keep, tables = [], [], []
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in weights:
            skip = any(_GROUP_TESTS[g](node.name) for g in _POLICIES[policy][0])
            (keep if skip else quantize).append(node.name)
        elif node.op_type == "LSTM" and lstm:
            quantize.append(node.name)
        elif node.op_type == "Gather" and node.input[0] in big_tables and _gather_axis(node) == 0:
            tables.append(node.name)  # embedding tables: most of a small BERT's bytes
    return {"quantize": quantize, "keep_fp32": keep, "embeddings": tables}


def _gather_axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 0)


def quantize_embedding_rows(model: onnx.ModelProto, gather_nodes: list[str]) -> int:
    """Store the tables these Gathers read as int8 with one scale per row.

    onnxruntime's dynamic quantizer gives a Gather table a single scale for the whole
    table (uint8), which measurably moved the joint model's end-to-end F1 on its own
    (docs/results.md, "int8 policy"); a scale per row (per token) keeps each embedding at
    8-bit precision of its own magnitude. Gather(table, ids) becomes
    Gather(int8 table, ids) -> Cast -> Mul(Gather(row scales, ids)). Returns the count.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    wanted = set(gather_nodes)
    nodes, replaced, done = [], set(), 0
    for node in model.graph.node:
        if node.name not in wanted:
            nodes.append(node)
            continue
        table_name, ids = node.input[0], node.input[1]
        w = numpy_helper.to_array(inits[table_name]).astype(np.float32)
        scale = np.abs(w).max(axis=1, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        base = f"{table_name}_rowq"
        model.graph.initializer.extend([numpy_helper.from_array(q, f"{base}_int8"),
                                        numpy_helper.from_array(scale.astype(np.float32), f"{base}_scale")])
        out = node.output[0]
        nodes += [
            helper.make_node("Gather", [f"{base}_int8", ids], [f"{out}_int8"], name=f"{node.name}_int8", axis=0),
            helper.make_node("Cast", [f"{out}_int8"], [f"{out}_float"], name=f"{node.name}_cast", to=onnx.TensorProto.FLOAT),
            helper.make_node("Gather", [f"{base}_scale", ids], [f"{out}_scale"], name=f"{node.name}_scale", axis=0),
            helper.make_node("Mul", [f"{out}_float", f"{out}_scale"], [out], name=f"{node.name}_dequantize"),
        ]
        replaced.add(table_name)
        done += 1
    graph = model.graph
    graph.ClearField("node")
    graph.node.extend(nodes)
    used = {x for n in graph.node for x in n.input}
    kept = [i for i in graph.initializer if i.name in used or i.name not in replaced]  # fp32 tables go
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
    return done


def needs_calibration(policy: str) -> bool:
    """Whether ``policy`` reads calibration batches (stage-1 inputs of training sentences)."""
    return policy in _STATIC or policy in _SMOOTHED


def _is_ffn(name: str) -> bool:
    return _is_ffn_in(name) or _is_ffn_out(name)


def quantize_int8(src: str | Path, dst: str | Path, policy: str = DEFAULT_INT8_POLICY, lstm: bool = True,
                  calibration: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """int8 quantization of ``src`` into ``dst`` under ``policy``; returns what was quantized.
    ``calibration``: input batches of this graph, for the policies that calibrate."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from nere.export.quantize_static import graph_accepts, quantize_static_matmuls

    src, dst = Path(src).resolve(), Path(dst).resolve()
    with tempfile.TemporaryDirectory(prefix="nere-int8-") as tmp, _in_dir(tmp):
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            source, note = pre, "quant_pre_process"
        except Exception as err:  # pre-processing is an optimisation; quantize the raw graph instead
            log.warning("quant_pre_process failed (%s); quantizing the graph as exported", str(err).splitlines()[0])
            source, note = src, f"quant_pre_process failed: {str(err).splitlines()[0]}"
        graph = onnx.load(str(source))
        plan = int8_plan(graph, policy, lstm)
        calibrated = needs_calibration(policy) and calibration is not None and graph_accepts(graph, calibration)
        static = calibrated and policy in _STATIC
        reduce_range = static  # without VNNI, u8 x s8 products at full range can saturate int16 sums
        extra: dict[str, Any] = {}
        if calibrated and policy in _SMOOTHED:
            from nere.export.smoothing import smooth_graph

            counts = smooth_graph(graph, calibration, _is_ffn, _SMOOTHED[policy])
            source = Path(tmp) / "smoothed.onnx"
            onnx.save(graph, str(source))
            extra = {"smoothing": {"alpha": _SMOOTHED[policy], "scope": "FFN dense inputs", **counts,
                                   "calibration_batches": len(calibration)}}
        if static and plan["quantize"]:
            extra = quantize_static_matmuls(source, Path(tmp) / "q.onnx", plan["quantize"], calibration,
                                           reduce_range=reduce_range)
            out = onnx.load(str(Path(tmp) / "q.onnx"))
        elif plan["quantize"]:
            quantize_dynamic(
                str(source), str(Path(tmp) / "q.onnx"), per_channel=True, weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul", "LSTM"] if lstm else ["MatMul"],
                nodes_to_quantize=plan["quantize"], reduce_range=reduce_range,
            )
            out = onnx.load(str(Path(tmp) / "q.onnx"))
        else:
            out = onnx.load(str(source))
        tables = quantize_embedding_rows(out, plan["embeddings"])
        onnx.save(out, str(dst))
    onnx.checker.check_model(str(dst))
    if static:
        method = ("onnxruntime quantize_static, QDQ, QInt8 weights per channel (reduce_range), QUInt8 "
                  "activations calibrated on training sentences")
    else:
        method = "onnxruntime quantize_dynamic, QInt8 weights, per_channel"
        if calibrated:
            method = "SmoothQuant on calibration sentences, then " + method
        elif needs_calibration(policy):
            extra = {"calibration": "no calibration inputs for this graph: quantized dynamically, unsmoothed"}
    return {"method": method + "; embedding tables int8 per row", "policy": policy,
            "quantized_nodes": len(plan["quantize"]), "embedding_tables_int8": tables,
            "fp32_weight_nodes": plan["keep_fp32"], "preprocess": note, **extra}


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder nodes so every input is produced before use (the onnx checker requires it;
    the float16 converter appends its input Casts after the nodes that read them)."""
    produced_by = {out: i for i, n in enumerate(graph.node) for out in n.output}
    nodes = list(graph.node)
    done: set[int] = set()
    order: list[int] = []

    def visit(i: int) -> None:
        stack = [(i, False)]
        while stack:
            k, expanded = stack.pop()
            if k in done:
                continue
            if expanded:
                done.add(k)
                order.append(k)
                continue
            stack.append((k, True))
            for name in nodes[k].input:
                j = produced_by.get(name)
                if j is not None and j not in done:
                    stack.append((j, False))

    for i in range(len(nodes)):
        visit(i)
    graph.ClearField("node")
    graph.node.extend(nodes[i] for i in order)


def convert_fp16(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """fp16 weights and compute with fp32 graph inputs/outputs (keep_io_types)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    topological_sort(model.graph)
    onnx.save(model, str(dst))
    onnx.checker.check_model(str(dst))
    return {"method": "onnxruntime.transformers.float16.convert_float_to_float16, keep_io_types, default op_block_list"}


def make_variant(src: str | Path, dst: str | Path, precision: str, int8_policy: str = DEFAULT_INT8_POLICY,
                 calibration: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Write ``precision``'s version of the fp32 graph ``src`` to ``dst`` (``calibration``:
    input batches of this graph, for the int8 policies that calibrate)."""
    if precision == "int8":
        return quantize_int8(src, dst, int8_policy, calibration=calibration)
    if precision == "fp16":
        return convert_fp16(src, dst)
    if precision == "fp32":
        if Path(src).resolve() != Path(dst).resolve():
            Path(dst).write_bytes(Path(src).read_bytes())
        return {}
    raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
