"""Activation smoothing before int8 (SmoothQuant, Xiao et al. 2022), as an ONNX rewrite.

Dynamic int8 quantizes each MatMul's activation input with one scale for the whole tensor,
so a few input channels with large values (the FFN inputs of a transformer) leave the
rest of the channels with few levels: that is where int8 loses its F1 (docs/results.md,
"int8 policy"). Since ``X W = (X diag(s)^-1) (diag(s) W)``, dividing activation channel
``j`` by ``s_j`` and multiplying weight row ``j`` by it changes nothing in fp32 and moves
the range from the activation, quantized per tensor, into the weight, quantized per
output channel. ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)``, with ``max|X_j|`` measured
on calibration batches (training sentences). One Mul per smoothed activation tensor is
inserted; MatMuls that read the same tensor (the Q, K, V projections of one layer) share
it.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

DEFAULT_ALPHA = 0.5


def weight_matmuls(model: onnx.ModelProto, select=lambda name: True) -> dict[str, list[onnx.NodeProto]]:
    """Activation tensor -> the selected MatMuls that multiply it by a 2-D weight initializer."""
    inits = {i.name: i for i in model.graph.initializer}
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        if (node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits
                and node.input[0] not in inits and len(inits[node.input[1]].dims) == 2 and select(node.name)):
            groups.setdefault(node.input[0], []).append(node)
    return groups


def channel_ranges(model: onnx.ModelProto, tensors: Iterable[str],
                   feeds: Iterable[dict[str, np.ndarray]], threads: int | None = None) -> dict[str, np.ndarray]:
    """Per last-axis channel max |x| of ``tensors`` over every calibration batch (onnxruntime)."""
    import onnxruntime as ort

    names = list(tensors)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in names if n not in have)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every probed tensor
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    ranges: dict[str, np.ndarray] = {}
    seen = 0
    for batch in feeds:
        for name, value in zip(names, session.run(names, batch)):
            top = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            ranges[name] = top if name not in ranges else np.maximum(ranges[name], top)
        seen += 1
    if not seen:
        raise ValueError("activation smoothing needs at least one calibration batch")
    return ranges


def smooth(model: onnx.ModelProto, groups: dict[str, list[onnx.NodeProto]], ranges: dict[str, np.ndarray],
           alpha: float = DEFAULT_ALPHA) -> int:
    """Rewrite ``model`` in place: per group, scale the weights' rows and divide the shared
    activation by the same factors. Returns the number of MatMuls smoothed."""
    inits = {i.name: i for i in model.graph.initializer}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    new_nodes: dict[str, onnx.NodeProto] = {}
    done = 0
    for act, nodes in groups.items():
        weights = [numpy_helper.to_array(inits[n.input[1]]).astype(np.float32) for n in nodes]
        w_top = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        x_top = ranges[act].astype(np.float32)
        s = np.where((x_top > 0) & (w_top > 0), x_top ** alpha / np.maximum(w_top, 1e-8) ** (1 - alpha), 1.0)
        s = np.clip(s, 1e-4, 1e4).astype(np.float32)
        scaled = f"{act}_smoothed"
        inv = f"{act}_smooth_inv"
        model.graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
        new_nodes[act] = helper.make_node("Mul", [act, inv], [scaled], name=f"{act}_smooth")
        for node, w in zip(nodes, weights):
            name = node.input[1]
            if readers.get(name, 0) > 1:  # a weight read elsewhere too: give this MatMul its own copy
                name = f"{name}_smoothed_{done}"
                model.graph.initializer.append(numpy_helper.from_array(w * s[:, None], name))
                node.input[1] = name
            else:
                inits[name].CopyFrom(numpy_helper.from_array(w * s[:, None], name))
            node.input[0] = scaled
            done += 1
    # each Mul goes right before the first node that reads its output (topological order kept)
    by_output = {mul.output[0]: mul for mul in new_nodes.values()}
    order: list[onnx.NodeProto] = []
    for node in model.graph.node:
        order.extend(by_output.pop(name) for name in node.input if name in by_output)
        order.append(node)
    model.graph.ClearField("node")
    model.graph.node.extend(order)
    return done
