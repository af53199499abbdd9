"""How close a bundle gets to the hardware: the stage-1 graph's weight FLOPs per token, the
device's measured matrix-multiply rate (onnxruntime, same provider and threads), and the
share of that rate the measured tokens/s represent.

FLOPs per token count every token-wise product with a weight matrix (MatMul/Gemm and their
quantized forms, fused Attention projections; LSTM input and recurrent weights), 2 FLOPs
per multiply-add. Products between activations (attention scores and context, T x T per
layer) are left out: at these sentence lengths they are a few percent of the total, so the
fraction slightly underestimates the real utilisation; so does counting content tokens
only (padding is work the device does, but not useful work). The yardstick is one large
fp32 MatMul (fp16 on CUDA for an fp16 bundle), also for int8 bundles.

Needs the ``onnx`` package (the export extra) to read graphs; without it the section is
left out of the report with the reason.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from nere.engine.bundle import RECURRENT_OPS

MATMUL_OPS = {"MatMul", "MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul", "Gemm", "FusedMatMul", "Attention"}
PASS_THROUGH = {"Cast", "Identity", "Transpose", "DequantizeLinear"}  # weight -> weight, same number of elements
MATMUL_SIZE = {"cpu": 1024, "cuda": 8192}


def weight_flops_per_token(graph_path: str | Path) -> int:
    """2 x (multiply-adds with weight matrices) per token of one stage-1 graph."""
    import onnx

    model = onnx.load(str(graph_path), load_external_data=False)
    sizes = {i.name: (math.prod(i.dims), len(i.dims)) for i in model.graph.initializer}
    total = 0
    for node in model.graph.node:  # nodes are topologically sorted
        if node.op_type in PASS_THROUGH and node.input and node.input[0] in sizes:
            sizes[node.output[0]] = sizes[node.input[0]]
        elif node.op_type in RECURRENT_OPS:
            w, r = node.input[1], node.input[2]  # (directions, gates x hidden, input) and (..., hidden)
            total += 2 * (sizes[w][0] + sizes[r][0])
        elif node.op_type in MATMUL_OPS:
            weights = [sizes[n][0] for n in node.input if n in sizes and sizes[n][1] == 2]
            total += 2 * max(weights, default=0)  # biases are 1-D, scales and zero points scalars
    return total


def matmul_gflops(provider: str, threads: int, dtype: str = "float32", seconds: float = 0.5) -> dict[str, Any]:
    """Best rate of an N x N x N MatMul over ~``seconds`` of repeats, in GFLOP/s."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    device = "cuda" if provider == "CUDAExecutionProvider" else "cpu"
    n = MATMUL_SIZE[device]
    elem = TensorProto.FLOAT16 if dtype == "float16" else TensorProto.FLOAT
    rng = np.random.default_rng(0)
    b = rng.standard_normal((n, n)).astype(dtype)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])], "matmul",
        [helper.make_tensor_value_info("a", elem, [n, n])], [helper.make_tensor_value_info("y", elem, [n, n])],
        [numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=[provider])
    a = rng.standard_normal((n, n)).astype(dtype)
    io = sess.io_binding()
    io.bind_ortvalue_input("a", ort.OrtValue.ortvalue_from_numpy(a, device, 0))
    io.bind_output("y", device)
    for _ in range(2):
        sess.run_with_iobinding(io)
    best, spent = math.inf, 0.0
    while spent < seconds or best == math.inf:
        t = time.perf_counter()
        sess.run_with_iobinding(io)
        dt = time.perf_counter() - t
        best, spent = min(best, dt), spent + dt
    return {"gflops": round(2 * n**3 / best / 1e9, 1), "matmul": f"{dtype} {n}x{n} @ {n}x{n}",
            "provider": sess.get_providers()[0], "threads": threads}


def compute_section(graph_path: str | Path, rate: dict[str, Any], e2e_tokens_s: float | None,
                    model_tokens_s: float | None) -> dict[str, Any]:
    """The report's ``compute`` entry of one model."""
    flops = weight_flops_per_token(graph_path)
    allowed = rate["gflops"] * 1e9 / flops if flops else None  # tokens/s the matmul rate allows

    def share(x: float | None) -> float | None:
        return round(x / allowed, 4) if x and allowed else None

    return {"stage1_weight_flops_per_token": flops, "yardstick": rate,
            "tokens_per_s_at_matmul_rate": round(allowed, 1) if allowed else None,
            "end_to_end_fraction": share(e2e_tokens_s), "model_only_fraction": share(model_tokens_s)}
