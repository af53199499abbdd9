"""Activation smoothing before int8 (SmoothQuant, Xiao et al. 2022).

int8 MatMuls quantize an activation with one scale for the whole tensor, so a few large
channels (a transformer's FFN inputs) leave the others few levels. Since
``X W = (X diag(s)^-1) (diag(s) W)``, dividing activation channel ``j`` by ``s_j`` and
multiplying weight row ``j`` by it is exact in fp32 and moves range from the activation
(one scale per tensor) into the weight (one scale per output column), with
``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` measured on calibration batches. Where the
activation comes out of a Mul by a constant (the tail of the exported GELU) the division
folds into that constant; elsewhere a Mul node is added in front of the MatMuls.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

DEFAULT_ALPHA = 0.5


def weight_matmuls(model: onnx.ModelProto, select: Callable[[str], bool] = lambda name: True
                   ) -> dict[str, list[onnx.NodeProto]]:
    """Activation tensor -> the selected MatMuls that multiply it by a 2-D weight initializer."""
    inits = {i.name: i for i in model.graph.initializer}
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        if (node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits
                and node.input[0] not in inits and len(inits[node.input[1]].dims) == 2 and select(node.name)):
            groups.setdefault(node.input[0], []).append(node)
    return groups


def channel_ranges(model: onnx.ModelProto, tensors: Iterable[str], feeds: Iterable[Mapping[str, np.ndarray]],
                   threads: int | None = 1) -> dict[str, np.ndarray]:
    """Per last-axis channel max |x| of ``tensors`` over every batch (padding included)."""
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
    wanted = {i.name for i in session.get_inputs()}
    ranges: dict[str, np.ndarray] = {}
    for batch in feeds:
        values = session.run(names, {k: v for k, v in batch.items() if k in wanted})
        for name, value in zip(names, values):
            top = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            ranges[name] = top if name not in ranges else np.maximum(ranges[name], top)
    if len(ranges) != len(names):
        raise ValueError("activation smoothing needs at least one calibration batch")
    return ranges


def _constant_mul(model: onnx.ModelProto, act: str, readers: dict[str, int]) -> tuple[onnx.NodeProto, int] | None:
    """The Mul producing ``act`` from a scalar constant (index of that input), when nothing
    else reads the constant; the smoothing factors can then replace it."""
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    inits = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Mul" and node.output[0] == act:
            for k, name in enumerate(node.input):
                if readers.get(name, 0) != 1:
                    continue
                if name in consts or name in inits:
                    value = _value(model, name)
                    if value is not None and value.size == 1:
                        return node, k
    return None


def _value(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            attr = next((a for a in node.attribute if a.name == "value"), None)
            return numpy_helper.to_array(attr.t) if attr is not None else None
    return None


def smooth(model: onnx.ModelProto, groups: dict[str, list[onnx.NodeProto]], ranges: Mapping[str, np.ndarray],
           alpha: float = DEFAULT_ALPHA) -> dict[str, int]:
    """Rewrite ``model`` in place: per group, scale the weights' rows and divide the shared
    activation by the same factors. Returns counts of MatMuls smoothed, factors folded into
    a constant Mul and Mul nodes added."""
    inits = {i.name: i for i in model.graph.initializer}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    new_nodes: dict[str, onnx.NodeProto] = {}
    counts = {"matmuls": 0, "folded": 0, "mul_nodes": 0}
    for act, nodes in groups.items():
        weights = [numpy_helper.to_array(inits[n.input[1]]).astype(np.float32) for n in nodes]
        w_top = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        x_top = np.asarray(ranges[act], dtype=np.float32)
        s = np.where((x_top > 0) & (w_top > 0), x_top ** alpha / np.maximum(w_top, 1e-8) ** (1 - alpha), 1.0)
        s = np.clip(s, 1e-4, 1e4).astype(np.float32)
        folded = _constant_mul(model, act, readers) if readers.get(act, 0) == len(nodes) else None
        if folded is not None:  # act = x * c, read only by these MatMuls: c becomes c / s
            mul, k = folded
            c = float(_value(model, mul.input[k]).reshape(()))
            name = f"{act}_smooth_scale"
            model.graph.initializer.append(numpy_helper.from_array((c / s).astype(np.float32), name))
            mul.input[k] = name
            counts["folded"] += 1
            source = act
        else:
            source = f"{act}_smoothed"
            inv = f"{act}_smooth_inv"
            model.graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
            new_nodes[act] = helper.make_node("Mul", [act, inv], [source], name=f"{act}_smooth")
            counts["mul_nodes"] += 1
        for node, w in zip(nodes, weights):
            name = node.input[1]
            if readers.get(name, 0) > 1:  # a weight read elsewhere too: give this MatMul its own copy
                name = f"{name}_smoothed_{counts['matmuls']}"
                model.graph.initializer.append(numpy_helper.from_array(w * s[:, None], name))
                node.input[1] = name
            else:
                inits[name].CopyFrom(numpy_helper.from_array(w * s[:, None], name))
            node.input[0] = source
            counts["matmuls"] += 1
    # each added Mul goes right before the first node that reads its output (topological order kept)
    by_output = {mul.output[0]: mul for mul in new_nodes.values()}
    order: list[onnx.NodeProto] = []
    for node in model.graph.node:
        order.extend(by_output.pop(name) for name in node.input if name in by_output)
        order.append(node)
    model.graph.ClearField("node")
    model.graph.node.extend(order)
    _drop_unread_constants(model)
    return counts


def _drop_unread_constants(model: onnx.ModelProto) -> None:
    """Remove the constants whose only reader was a folded Mul."""
    read = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    keep = [n for n in model.graph.node if n.op_type != "Constant" or n.output[0] in read]
    if len(keep) != len(model.graph.node):
        model.graph.ClearField("node")
        model.graph.node.extend(keep)
    inits = [i for i in model.graph.initializer if i.name in read]
    if len(inits) != len(model.graph.initializer):
        model.graph.ClearField("initializer")
        model.graph.initializer.extend(inits)


def smooth_graph(model: onnx.ModelProto, feeds: Iterable[Mapping[str, np.ndarray]], select: Callable[[str], bool],
                 alpha: float = DEFAULT_ALPHA) -> dict[str, int]:
    """Measure the selected weight MatMuls' input ranges on ``feeds`` and smooth them."""
    groups = weight_matmuls(model, select)
    if not groups:  # nothing selected (a graph without FFN denses): no calibration pass
        return {"matmuls": 0, "folded": 0, "mul_nodes": 0}
    return smooth(model, groups, channel_ranges(model, groups, feeds), alpha)
