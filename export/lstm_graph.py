"""The exported BiLSTM graph without its two reversals: the backward LSTM runs in reverse.

``BiLSTMEncoder`` (train/models/encoders.py) runs its backward direction as a forward LSTM
over each sequence reversed within its length and reverses the output back: in ONNX two
``GatherElements`` over (batch, time, features) with index tensors built per call (Range,
Less, Where, Expand), and Transposes around them. ONNX's LSTM does the same itself:
``direction="reverse"`` with ``sequence_lens`` reads each sequence from its last real step
back to the first and writes each output at its own step. So this pass feeds the backward
LSTM the unreversed input, gives it the lengths (``ReduceSum(attention_mask)`` as int32) and
the reverse direction (every layer of it, for ``num_layers > 1``: each reverse layer reads
the previous one's output as is), and drops both gathers; whatever only computed their
indices goes with them. The values at real positions are the same computation in the same
order (fp32: equal to the bit on the engine's shapes); the module zeroes the backward half
at padding and the graph keeps that product, so padding positions agree too, and the
export's parity check against PyTorch covers the rewritten graph. A graph of any other
shape is left as it is. Why it pays: docs/benchmarks.md, "Engine overhead".
"""
from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from nere.export.variants import topological_sort

LENGTHS = "nere_sequence_lens"  # the int32 lengths the reverse LSTMs read
_AXES = "nere_sequence_lens_axes"


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _is_batch_time_swap(node: onnx.NodeProto | None) -> bool:
    return node is not None and node.op_type == "Transpose" and list(_attr(node, "perm", [])) == [1, 0, 2]


def _is_time_gather(node: onnx.NodeProto | None) -> bool:
    return node is not None and node.op_type == "GatherElements" and _attr(node, "axis", 0) == 1


def _is_plain_forward_lstm(node: onnx.NodeProto) -> bool:
    """A forward LSTM that reads no sequence lengths (what the exporter writes for nn.LSTM)."""
    return (node.op_type == "LSTM" and _attr(node, "direction", b"forward") == b"forward"
            and not (len(node.input) > 4 and node.input[4]))


def fold_lstm_reversals(model: onnx.ModelProto, mask_input: str = "attention_mask") -> int:
    """Rewrite, in place, every backward LSTM of the pattern above (see the module doc);
    returns how many. A graph without the pattern (or without ``mask_input``) is left as
    it is: 0. The match is structural (the gathers' index tensors are not traced back to
    the mask); the export's parity check against the module, on inputs with padding, is
    what proves each rewrite."""
    g = model.graph
    if mask_input not in {i.name for i in g.input}:
        return 0
    producer = {o: n for n in g.node for o in n.output}
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    done = 0
    for lstm in list(g.node):
        if not _is_plain_forward_lstm(lstm):
            continue
        swap_in = producer.get(lstm.input[0])
        gather_in = producer.get(swap_in.input[0]) if _is_batch_time_swap(swap_in) else None
        if not _is_time_gather(gather_in):
            continue
        chain, swap_out = _backward_stack(lstm, users)
        if swap_out is None:
            continue
        out_users = users.get(swap_out.output[0], [])
        gather_out = [u for u in out_users if _is_time_gather(u)]
        # besides the gather, only the index computation reads the output (its shape)
        if len(gather_out) != 1 or any(u.op_type not in ("GatherElements", "Shape") for u in out_users):
            continue
        if any(u.op_type not in ("Transpose", "Shape") for u in users.get(gather_in.output[0], [])):
            continue
        reversed_out, back = gather_out[0].output[0], swap_out.output[0]
        if reversed_out in {o.name for o in g.output}:
            continue  # the reversed output is itself a graph output: keep the gathers
        if not done:
            g.initializer.append(helper.make_tensor(_AXES, TensorProto.INT64, [1], [1]))
            g.node.extend([
                helper.make_node("ReduceSum", [mask_input, _AXES], [LENGTHS + "_int64"], keepdims=0,
                                 name="nere/lengths/ReduceSum"),
                helper.make_node("Cast", [LENGTHS + "_int64"], [LENGTHS], to=TensorProto.INT32, name="nere/lengths/Cast"),
            ])
        unreversed = gather_in.input[0]
        for u in users.get(gather_in.output[0], []):  # the Transpose, and Shapes (same shape unreversed)
            u.input[0] = unreversed
        # the forward LSTM's own (time, batch) copy of the same input serves both
        twin = [u for u in users.get(unreversed, []) if _is_batch_time_swap(u) and u.output[0] != swap_in.output[0]]
        if twin:
            lstm.input[0] = twin[0].output[0]
        for layer in chain:  # a stack runs reverse layer by layer: each reads the one before as is
            while len(layer.input) < 5:
                layer.input.append("")
            layer.input[4] = LENGTHS
            for a in [a for a in layer.attribute if a.name == "direction"]:
                layer.attribute.remove(a)
            layer.attribute.append(helper.make_attribute("direction", "reverse"))
        for n in g.node:
            for k, name in enumerate(n.input):
                if name == reversed_out:
                    n.input[k] = back
        done += 1
    if done:
        _drop_unused(g)
        topological_sort(g)
    return done


def _backward_stack(first: onnx.NodeProto, users: dict[str, list[onnx.NodeProto]]
                    ) -> tuple[list[onnx.NodeProto], onnx.NodeProto | None]:
    """The LSTM layers from ``first`` on (each layer's output squeezed into the next one's
    input, as the exporter writes ``num_layers > 1``) and the (time, batch) -> (batch,
    time) Transpose after the last; (layers, None) when the chain ends any other way."""
    chain, layer = [first], first
    while True:
        squeezed = users.get(layer.output[0], [])
        if len(squeezed) != 1 or squeezed[0].op_type != "Squeeze":
            return chain, None
        after = users.get(squeezed[0].output[0], [])
        if len(after) != 1:
            return chain, None
        nxt = after[0]
        if _is_batch_time_swap(nxt):
            return chain, nxt
        if not _is_plain_forward_lstm(nxt) or nxt.input[0] != squeezed[0].output[0]:
            return chain, None
        chain.append(nxt)
        layer = nxt


def _drop_unused(g: onnx.GraphProto) -> None:
    """Nodes and initializers no graph output depends on (nodes by index: protobuf hands
    out a new wrapper object on every access)."""
    nodes = list(g.node)
    producer = {o: k for k, n in enumerate(nodes) for o in n.output}
    needed = {o.name for o in g.output}
    keep: set[int] = set()
    stack = [producer[name] for name in needed if name in producer]
    while stack:
        k = stack.pop()
        if k in keep:
            continue
        keep.add(k)
        for name in nodes[k].input:
            needed.add(name)
            if name in producer and producer[name] not in keep:
                stack.append(producer[name])
    inits = [i for i in g.initializer if i.name in needed]
    g.ClearField("node")
    g.node.extend(nodes[k] for k in sorted(keep))
    g.ClearField("initializer")
    g.initializer.extend(inits)


def fold_lstm_reversals_file(path: str | Path) -> int:
    """:func:`fold_lstm_reversals` on a saved graph, rewritten in place when it matched."""
    model = onnx.load(str(path))
    done = fold_lstm_reversals(model)
    if done:
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return done
