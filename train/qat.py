"""Quantization-aware fine-tuning: train through the rounding onnxruntime's int8 will do.

``nere export --precision int8`` quantizes every weight MatMul dynamically: weights
symmetric int8 per output channel (-127..127, zero point 0), the MatMul's input per call
asymmetric uint8 over the whole tensor (DynamicQuantizeLinear: range widened to hold 0).
``FakeQuantLinear`` computes exactly that in float, with the straight-through gradient of
torch's fake-quantize ops, so fine-tuning can adapt the weights to it. On x86 CPUs without
VNNI, onnxruntime's u8 x s8 kernel (VPMADDUBSW) adds each two neighbouring products into a
saturating int16 before the int32 sum; ``int16_pairs`` reproduces that as well (see
``int16_pair_correction``). Wrapping keeps the
parameters themselves (same objects, same state_dict keys): unwrapped, the model is a plain
checkpoint again and exports as any other.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from nere.engine.core.types import Example

WEIGHT_QMIN, WEIGHT_QMAX = -127, 127  # onnxruntime's symmetric int8 weight range
ACT_QMIN, ACT_QMAX = 0, 255  # DynamicQuantizeLinear: uint8
INT16_MIN, INT16_MAX = -32768, 32767
_ROWS_PER_CHUNK = 256  # tokens per step of the saturation correction: bounds its memory


def weight_scale(weight: torch.Tensor) -> torch.Tensor:
    """onnxruntime's symmetric int8 scale of each output row of ``weight`` (out, in)."""
    scale = weight.detach().abs().amax(dim=1).float() / WEIGHT_QMAX
    return torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row: scale 1, as ORT


def fake_quant_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (out, in) rounded as onnxruntime stores it: one symmetric scale per output row.

    Rounded from ``weight / scale`` as onnxruntime's quantizer divides (torch's fake-quantize
    ops multiply by 1/scale, which flips the odd tie); straight-through gradient."""
    scale = weight_scale(weight)[:, None]
    rounded = torch.clamp(torch.round(weight.detach() / scale), WEIGHT_QMIN, WEIGHT_QMAX) * scale
    return weight + (rounded - weight.detach())


def activation_qparams(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero point) of DynamicQuantizeLinear for ``x``: its min/max widened to hold 0."""
    d = x.detach().float()
    lo, hi = d.min().clamp(max=0.0), d.max().clamp(min=0.0)
    scale = (hi - lo) / (ACT_QMAX - ACT_QMIN)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero tensor: any scale is exact
    zero = torch.clamp(torch.round(ACT_QMIN - lo / scale), ACT_QMIN, ACT_QMAX).to(torch.int32)
    return scale, zero


def fake_quant_activation(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to uint8 per tensor from its own range, as DynamicQuantizeLinear does per
    call (dividing by the scale, as it does); straight-through gradient."""
    scale, zero = activation_qparams(x)
    d = x.detach()
    rounded = (torch.clamp(torch.round(d / scale) + zero, ACT_QMIN, ACT_QMAX) - zero) * scale
    return x + (rounded - d)


def int16_pair_correction(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
    """(M, N): saturated minus exact integer sums of ``xq`` (M, K raw uint8 values) times
    ``wq`` (N, K int8 values) when products are added pairwise (k = 2i, 2i+1) into int16.

    Only a pair whose weights sum to more than INT16_MAX / max(xq) in magnitude can
    saturate; those few are computed exactly and the rest is left to the float matmul."""
    m, k = xq.shape
    if k % 2:
        xq, wq = F.pad(xq, (0, 1)), F.pad(wq, (0, 1))
    wp = wq.view(wq.shape[0], -1, 2)
    top = float(xq.max()) if xq.numel() else 0.0
    rows, pairs = torch.nonzero(wp.abs().sum(-1) * top > INT16_MAX, as_tuple=True)
    out = torch.zeros(m, wq.shape[0], dtype=torch.float32, device=xq.device)  # integers < 2**24: exact
    if rows.numel():
        xp = xq.reshape(m, -1, 2)
        w0, w1 = wp[rows, pairs, 0], wp[rows, pairs, 1]
        for start in range(0, m, _ROWS_PER_CHUNK):
            chunk = xp[start:start + _ROWS_PER_CHUNK]
            p = chunk[:, pairs, 0] * w0 + chunk[:, pairs, 1] * w1  # (rows, candidates)
            out[start:start + _ROWS_PER_CHUNK].index_add_(1, rows, torch.clamp(p, INT16_MIN, INT16_MAX) - p)
    return out


def exported_as_matmul(x: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether the ONNX exporter writes this Linear call as a MatMul (which int8 quantizes):
    a 2-D input with a bias becomes a Gemm instead, which the dynamic quantizer leaves fp32."""
    return x.dim() != 2 or bias is None


class FakeQuantLinear(nn.Linear):
    """An ``nn.Linear`` whose MatMul is int8-rounded the way onnxruntime will run it."""

    def __init__(self, linear: nn.Linear, int16_pairs: bool = False) -> None:
        nn.Module.__init__(self)
        self.int16_pairs = int16_pairs
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # the same Parameter objects: optimizers and state_dict see no change
        self.bias = linear.bias
        self.train(linear.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not exported_as_matmul(x, self.bias):
            return F.linear(x, self.weight, self.bias)
        xf, wf = fake_quant_activation(x), fake_quant_weight(self.weight)
        y = F.linear(xf, wf, self.bias)
        if not self.int16_pairs:
            return y
        with torch.no_grad():  # saturation as a constant offset: the gradient stays straight-through
            scale, zero = activation_qparams(x)
            w_scale = weight_scale(self.weight)
            xq = torch.clamp(torch.round(x.detach().float() / scale) + zero, ACT_QMIN, ACT_QMAX)
            wq = torch.clamp(torch.round(self.weight.detach().float() / w_scale[:, None]), WEIGHT_QMIN, WEIGHT_QMAX)
            corr = int16_pair_correction(xq.reshape(-1, xq.shape[-1]), wq)
        return y + (corr * (scale * w_scale)).to(y.dtype).reshape(y.shape)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", int16_pairs=True" if self.int16_pairs else "")


def _swap(model: nn.Module, make: Callable[[nn.Linear], nn.Module], want: Callable[[nn.Module], bool]) -> int:
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if want(child):
                setattr(parent, name, make(child))
                count += 1
    return count


def wrap_linears(model: nn.Module, int16_pairs: bool = False) -> int:
    """Fake-quantize every ``nn.Linear`` of ``model`` in place; returns how many were wrapped.
    Calls that export as Gemm (2-D input with bias) stay float, as int8 leaves them.
    ``int16_pairs``: also the int16 saturation of CPUs without VNNI."""
    return _swap(model, lambda m: FakeQuantLinear(m, int16_pairs), lambda m: type(m) is nn.Linear)


def _plain(linear: nn.Linear) -> nn.Linear:
    out = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)
    out.weight, out.bias = linear.weight, linear.bias
    out.train(linear.training)
    return out


def unwrap_linears(model: nn.Module) -> int:
    """Undo ``wrap_linears``: plain ``nn.Linear`` modules holding the same float weights."""
    return _swap(model, _plain, lambda m: isinstance(m, FakeQuantLinear))


@dataclass
class TaskLoop:
    """What ``fit`` needs for one task: batches, the dev evaluation, the score it selects on."""

    make_batches: Callable[[random.Random], Sequence[dict[str, Any]]]
    evaluate: Callable[[nn.Module, Sequence[Example]], dict[str, Any]]
    score_key: str


def task_loop(model, featurizer, train: Sequence[Example], batch_size: int, neg_ratio: float) -> TaskLoop:
    """The training batches, evaluation and selection score the task's own command uses."""
    if model.task == "joint":
        from nere.train.joint_task import evaluate_joint, joint_batches

        return TaskLoop(joint_batches(model, featurizer, train, batch_size, neg_ratio),
                        lambda m, exs: evaluate_joint(m, featurizer, exs), "e2e_f1")
    if model.task == "re":
        from nere.train.re_task import evaluate_re, re_batches

        return TaskLoop(re_batches(model, featurizer, train, batch_size, neg_ratio),
                        lambda m, exs: evaluate_re(m, featurizer, exs), "macro_f1")
    if model.task == "ner":
        from nere.train.ner_task import evaluate_ner, ner_batches

        return TaskLoop(ner_batches(model, featurizer, train, batch_size),
                        lambda m, exs: evaluate_ner(m, featurizer, exs), "f1")
    raise ValueError(f"quantization-aware fine-tuning does not know task {model.task!r}")
