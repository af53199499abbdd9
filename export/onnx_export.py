"""GraphSpec -> one self-contained .onnx file, and the graph's IO read back from it.

The TorchScript exporter (``dynamo=False``, opset 17) writes a single file with the
dynamic axes named as the model declares them; the dynamo exporter would need
``external_data=False`` and opset 18 for the same result (toolchain notes). What the
manifest says about a graph is read from the saved file, never from the spec, so the
manifest cannot drift from the graph it describes.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from nere.engine.bundle import RECURRENT_OPS
from nere.train.models.base import GraphSpec

OPSET = 17

_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.BOOL: "bool",
}


def export_graph(spec: GraphSpec, path: str | Path, opset: int = OPSET) -> Path:
    """Export ``spec.module`` (in eval mode) to ``path``; refuses to leave side files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    before = set(path.parent.iterdir())
    module = spec.module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        # tracer warnings about Python-side shape arithmetic in transformers' mask code
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(spec.dummy),
            str(path),
            input_names=list(spec.inputs),
            output_names=list(spec.outputs),
            dynamic_axes={k: dict(v) for k, v in spec.dynamic_axes.items()},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    extra = sorted(p.name for p in set(path.parent.iterdir()) - before - {path})
    if extra:
        raise RuntimeError(f"export of {spec.name} wrote extra files {extra}; bundles need single-file graphs")
    onnx.checker.check_model(str(path))
    return path


def value_info(v: onnx.ValueInfoProto) -> dict[str, Any]:
    """{"name", "dtype", "shape"}: a dim is its symbolic name when dynamic, else its size."""
    t = v.type.tensor_type
    dtype = _DTYPES.get(t.elem_type, onnx.TensorProto.DataType.Name(t.elem_type).lower())
    shape = [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim]
    return {"name": v.name, "dtype": dtype, "shape": shape}


def graph_io(path: str | Path) -> dict[str, Any]:
    """Inputs and outputs of a saved graph, as the manifest records them, and whether it
    holds a recurrent operator (the engine runs such graphs as several concurrent calls)."""
    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return {
        "inputs": [value_info(v) for v in model.graph.input if v.name not in inits],
        "outputs": [value_info(v) for v in model.graph.output],
        "recurrent": any(n.op_type in RECURRENT_OPS for n in model.graph.node),
    }


def dummy_feeds(spec: GraphSpec) -> dict[str, np.ndarray]:
    return {name: t.detach().cpu().numpy() for name, t in zip(spec.inputs, spec.dummy)}


def torch_outputs(spec: GraphSpec, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The module's outputs on numpy feeds (in ``spec.inputs`` order)."""
    args = tuple(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in spec.inputs)
    with torch.no_grad():
        out = spec.module.eval()(*args)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o.detach().float().cpu().numpy() for o in outs]
