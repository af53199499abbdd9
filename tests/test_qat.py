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
from nere.train.qat import FakeQuantLinear, exported_as_matmul, int16_pair_correction, unwrap_linears, wrap_linears


def _ort_dynamic_matmul(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, int16_pairs: bool = False) -> np.ndarray:
    """x @ weight.T + bias as onnxruntime's quantize_dynamic graph computes it, in numpy:
    the weight quantized by onnxruntime's own per-channel code (axis 1 of the MatMul's
    (in, out) weight), the input by the DynamicQuantizeLinear formula, integer products;
    ``int16_pairs``: neighbouring u8 x s8 products summed into a saturating int16 first
    (VPMADDUBSW, x86 without VNNI)."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    w_t = weight.T  # MatMul's B: (in, out); one channel per output column
    w_scale, w_q = np.empty(w_t.shape[1], np.float32), np.empty(w_t.shape, np.int64)
    for j in range(w_t.shape[1]):
        zero, scale, q = quantize_data(w_t[:, j], TensorProto.INT8, symmetric=True)
        assert int(zero) == 0
        w_scale[j], w_q[:, j] = scale, q
    lo, hi = min(0.0, float(x.min())), max(0.0, float(x.max()))
    x_scale = np.float32((hi - lo) / 255.0)
    x_zero = int(np.clip(np.rint(-lo / x_scale), 0, 255))
    x_q = np.clip(np.rint(x / x_scale) + x_zero, 0, 255).astype(np.int64)
    if int16_pairs:
        products = x_q[..., :, None] * w_q  # (..., K, N)
        pairs = products.reshape(*products.shape[:-2], -1, 2, products.shape[-1]).sum(-2)
        acc = np.clip(pairs, -32768, 32767).sum(-2) - x_zero * w_q.sum(0)
    else:
        acc = (x_q - x_zero) @ w_q  # MatMulInteger: exact int32 sums
    return acc.astype(np.float32) * (x_scale * w_scale) + bias


def _linear_and_input(shape, seed: int = 0, k: int = 16, n: int = 8):
    rng = np.random.default_rng(seed)
    linear = nn.Linear(k, n)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(rng.normal(size=(n, k)).astype(np.float32)))
        linear.weight[3] *= 0.01  # rows of very different magnitude: per-channel scales matter
    x = (rng.normal(size=(*shape, k)) * 3 + 0.7).astype(np.float32)  # not centred: the zero point matters
    return linear, x


def _close(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("int16_pairs", [False, True])
@pytest.mark.parametrize("shape", [(3, 5), (2, 7)])
def test_fake_quant_linear_equals_an_int8_dynamic_matmul(shape, int16_pairs):
    linear, x = _linear_and_input(shape)
    got = FakeQuantLinear(linear, int16_pairs)(torch.from_numpy(x)).detach().numpy()
    w, b = linear.weight.detach().numpy(), linear.bias.detach().numpy()
    _close(got, _ort_dynamic_matmul(x, w, b, int16_pairs))
    plain = linear(torch.from_numpy(x)).detach().numpy()
    assert np.abs(plain - got).max() > 1e-4  # the rounding is really there
    exact, saturated = _ort_dynamic_matmul(x, w, b), _ort_dynamic_matmul(x, w, b, True)
    assert np.abs(exact - saturated).max() > 1e-3  # these inputs do saturate some int16 pairs


def _onnxruntime_int8(linear: nn.Linear, x: np.ndarray, folder) -> np.ndarray:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.onnx.export(linear, (torch.from_numpy(x),), str(folder / "fp32.onnx"), input_names=["x"],
                      output_names=["y"], opset_version=17, dynamo=False)
    quantize_dynamic(str(folder / "fp32.onnx"), str(folder / "int8.onnx"), per_channel=True,
                     weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    assert "MatMulInteger" in [n.op_type for n in onnx.load(str(folder / "int8.onnx")).graph.node]
    sess = ort.InferenceSession(str(folder / "int8.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_fake_quant_linear_matches_onnxruntime_itself(tmp_path):
    """The Linear exported and quantized by onnxruntime gives the wrapper's output where no
    int16 pair can saturate (every other input channel's weight 0), on any CPU; where pairs
    do saturate, onnxruntime on this CPU matches one of the two modes."""
    linear, x = _linear_and_input((2, 6), seed=1, k=24, n=10)
    with torch.no_grad():
        linear.weight[:, 1::2] = 0.0
    _close(FakeQuantLinear(linear)(torch.from_numpy(x)).detach().numpy(), _onnxruntime_int8(linear, x, tmp_path))

    linear, x = _linear_and_input((2, 6), seed=1, k=24, n=10)
    want = _onnxruntime_int8(linear, x, tmp_path)
    modes = [FakeQuantLinear(linear, pairs)(torch.from_numpy(x)).detach().numpy() for pairs in (False, True)]
    assert any(np.allclose(m, want, rtol=1e-5, atol=1e-5 * np.abs(want).max()) for m in modes)


def test_int16_pair_correction_handles_odd_widths_and_no_candidates():
    xq = torch.tensor([[255.0, 255.0, 255.0]])
    wq = torch.tensor([[127.0, 127.0, 127.0], [1.0, 1.0, 1.0]])
    corr = int16_pair_correction(xq, wq)
    assert corr.tolist() == [[32767.0 - 2 * 255 * 127, 0.0]]  # the third product has no neighbour
    assert torch.count_nonzero(int16_pair_correction(xq, wq[1:])) == 0


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


@pytest.mark.parametrize("saturation", [False, True])
def test_cli_train_qat_writes_a_checkpoint_that_exports(tmp_path, saturation):
    from nere.train_commands import train

    ckpt, data = _tiny_checkpoint(tmp_path)
    out = tmp_path / "qat"
    res = CliRunner().invoke(train, ["qat", str(ckpt), "--dataset", str(data), "--out", str(out), "--epochs", "1",
                                     "--lr", "1e-3", "--batch-size", "4", "--quiet",
                                     *(["--avx2-saturation"] if saturation else [])])
    assert res.exit_code == 0, res.output
    assert "fake-quantized" in res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["qat"] is True and m["task"] == "joint" and m["command"].startswith("nere ")
    assert m["qat_int16_saturation"] is saturation and m["best_epoch"] in (0, 1)
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
