"""Quantization-aware fine-tuning: the fake-quantized Linear computes what onnxruntime's
dynamic int8 MatMul computes, wrapping is lossless, and `nere train qat` writes a plain
checkpoint that exports."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from test_joint import tiny_joint
from test_re import toy_examples
from torch import nn

from nere.export.bundle import write_bundle
from nere.export.onnx_export import export_graph
from nere.export.variants import int8_plan
from nere.train.checkpoint import load_checkpoint, save_checkpoint
from nere.train.datasets import write_jsonl
from nere.train.qat import FakeQuantLinear, exported_as_matmul, unwrap_linears, wrap_linears


def _ort_dynamic_matmul(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """x @ weight.T + bias as onnxruntime's quantize_dynamic graph computes it, in numpy:
    the weight quantized by onnxruntime's own per-channel code (axis 1 of the MatMul's
    (in, out) weight), the input by the DynamicQuantizeLinear formula, integer products."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    w_t = weight.T  # MatMul's B: (in, out); one channel per output column
    w_scale, w_q = np.empty(w_t.shape[1], np.float32), np.empty(w_t.shape, np.int32)
    for j in range(w_t.shape[1]):
        zero, scale, q = quantize_data(w_t[:, j], TensorProto.INT8, symmetric=True)
        assert int(zero) == 0
        w_scale[j], w_q[:, j] = scale, q
    lo, hi = min(0.0, float(x.min())), max(0.0, float(x.max()))
    x_scale = np.float32((hi - lo) / 255.0)
    x_zero = int(np.clip(np.rint(-lo / x_scale), 0, 255))
    x_q = np.clip(np.rint(x / x_scale) + x_zero, 0, 255).astype(np.int64)
    acc = (x_q - x_zero) @ w_q.astype(np.int64)  # MatMulInteger: exact int32 sums
    return acc.astype(np.float32) * (x_scale * w_scale) + bias


@pytest.mark.parametrize("shape", [(3, 5, 16), (2, 7, 16)])
def test_fake_quant_linear_equals_an_int8_dynamic_matmul(shape):
    rng = np.random.default_rng(0)
    linear = nn.Linear(16, 8)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(rng.normal(size=(8, 16)).astype(np.float32)))
        linear.weight[3] *= 0.01  # rows of very different magnitude: per-channel scales matter
    x = (rng.normal(size=shape) + 0.7).astype(np.float32)  # not centred: the zero point matters
    got = FakeQuantLinear(linear)(torch.from_numpy(x)).detach().numpy()
    want = _ort_dynamic_matmul(x, linear.weight.detach().numpy(), linear.bias.detach().numpy())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    plain = linear(torch.from_numpy(x)).detach().numpy()
    assert np.abs(plain - want).max() > 1e-4  # the rounding is really there


def test_fake_quant_linear_matches_onnxruntime_itself(tmp_path):
    """The same Linear exported and quantized by onnxruntime gives the wrapper's output."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.manual_seed(0)
    linear = nn.Linear(24, 10)
    x = torch.randn(2, 6, 24) * 3 + 1
    torch.onnx.export(linear, (x,), str(tmp_path / "fp32.onnx"), input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False)
    quantize_dynamic(str(tmp_path / "fp32.onnx"), str(tmp_path / "int8.onnx"), per_channel=True,
                     weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node]
    assert "MatMulInteger" in ops
    sess = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x.numpy()})[0]
    got = FakeQuantLinear(linear)(x).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_gradients_pass_straight_through():
    linear = FakeQuantLinear(nn.Linear(4, 3))
    x = torch.randn(2, 5, 4, requires_grad=True)
    linear(x).sum().backward()
    assert x.grad is not None and linear.weight.grad is not None and linear.bias.grad is not None
    assert torch.count_nonzero(linear.weight.grad) == linear.weight.numel()


def test_wrap_unwrap_round_trip_keeps_weights_and_outputs():
    torch.manual_seed(0)
    exs = toy_examples()
    model, _, feat, _ = tiny_joint(exs)
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    ids, mask = model.export_graphs()[0].dummy[:2]
    emissions, hidden = model.forward_stage1(ids, mask)
    linears = sum(type(m) is nn.Linear for m in model.modules())
    assert wrap_linears(model) == linears
    assert list(model.parameters()) == params  # the same Parameter objects: an optimizer sees no change
    assert list(model.state_dict()) == list(state)
    q_emissions, _ = model.forward_stage1(ids, mask)
    assert not torch.equal(q_emissions, emissions)
    assert wrap_linears(model) == 0  # already wrapped
    assert unwrap_linears(model) == linears
    assert not any(isinstance(m, FakeQuantLinear) for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items())
    again, hidden2 = model.forward_stage1(ids, mask)
    assert torch.equal(again, emissions) and torch.equal(hidden2, hidden)


def test_fake_quantized_calls_are_the_matmuls_int8_quantizes(tmp_path):
    """Each Linear call that is rounded in training is a MatMul int8 `none` quantizes in the
    exported graphs; the others (2-D input with bias: Gemm) stay fp32 in both."""
    torch.manual_seed(0)
    model, _, _, _ = tiny_joint(toy_examples())
    model.eval()
    graphs = model.export_graphs()
    planned = sum(len(int8_plan(onnx.load(str(export_graph(spec, tmp_path / f"{spec.name}.onnx"))), "none")["quantize"])
                  for spec in graphs)
    assert planned > 0
    model_calls = []
    hooks = [m.register_forward_hook(lambda mod, a, o: model_calls.append(exported_as_matmul(a[0], mod.bias)))
             for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for spec in graphs:
            spec.module(*spec.dummy)
    for h in hooks:
        h.remove()
    assert sum(model_calls) == planned
    assert len(model_calls) > planned  # stage 2's Gemms: not rounded, as int8 leaves them


def _tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    exs = toy_examples()
    model, tok, _, _ = tiny_joint(exs)
    ckpt = save_checkpoint(model, tok, tmp_path / "ckpt", {"task": "joint", "neg_ratio": -1.0,
                                                            "command": "nere train joint ..."})
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev", "test"):
        write_jsonl(exs, data / f"{split}.jsonl")
    return ckpt, data


def test_cli_train_qat_writes_a_checkpoint_that_exports(tmp_path):
    from nere.train_commands import train

    ckpt, data = _tiny_checkpoint(tmp_path)
    out = tmp_path / "qat"
    res = CliRunner().invoke(train, ["qat", str(ckpt), "--dataset", str(data), "--out", str(out), "--epochs", "1",
                                     "--lr", "1e-3", "--batch-size", "4", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "fake-quantized" in res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["qat"] is True and m["task"] == "joint" and m["command"].startswith("nere ")
    assert m["neg_ratio"] == -1.0 and "e2e_f1" in m["dev"] and "e2e_f1" in m["dev_before"]
    assert m["train_config"]["lr"] == m["train_config"]["head_lr"] == 1e-3
    model, _, config = load_checkpoint(out)
    assert not any(isinstance(mod, FakeQuantLinear) for mod in model.modules())
    source, _, _ = load_checkpoint(ckpt)
    assert list(model.state_dict()) == list(source.state_dict())
    bundle, manifest = write_bundle(model, config, out / "tokenizer.json", tmp_path / "bundle", precision="int8",
                                    int8_policy="none", command="pytest")
    assert manifest["made_by"]["variant"]["ner"]["quantized_nodes"] > 0


def test_cli_train_qat_user_errors_are_one_line(tmp_path):
    from nere.train_commands import train

    ckpt, data = _tiny_checkpoint(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (["qat", str(empty), "--dataset", str(data), "--out", str(tmp_path / "o1")],
                 ["qat", str(ckpt), "--dataset", "nosuchdataset", "--out", str(tmp_path / "o2")]):
        res = CliRunner().invoke(train, args)
        assert res.exit_code == 1, res.output
        assert "Error:" in res.output and "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
