"""Static int8 (QDQ) quantization of an fp32 graph, calibrated on real model inputs.

Dynamic quantization picks each activation's scale per call from the whole tensor; static
quantization fixes it from calibration batches (training sentences) and stores the
activation and weight scales as QuantizeLinear/DequantizeLinear pairs, which onnxruntime
fuses into integer MatMuls when it loads the graph. Only MatMuls with a weight as second
input are quantized (the attention-score MatMuls multiply two activations and stay fp32).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import onnx

# calibration methods offered by onnxruntime.quantization.CalibrationMethod, by our name
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
DEFAULT_CALIBRATION_METHOD = "minmax"
DEFAULT_CALIBRATION_SENTENCES = 512
CALIBRATION_ROWS = 32  # sentences per calibration batch

Feed = Mapping[str, np.ndarray]


def calibration_feeds(featurizer: Any, texts: Sequence[str], rows: int = CALIBRATION_ROWS,
                      same_width: bool = False) -> list[dict[str, np.ndarray]]:
    """Stage-1 inputs (``input_ids``, ``attention_mask``) for ``texts``, batched by length as
    the engine batches them; texts longer than one window are cut to it. ``same_width``:
    pad every batch to the longest text (onnxruntime's histogram calibrators stack batches)."""
    items = [featurizer.truncate(it)[0] for it in featurizer.tokenize(list(texts))]
    items.sort(key=lambda it: len(it.ids))
    width = max((len(it.ids) for it in items), default=0) + featurizer.n_special if same_width else 0
    feeds = []
    for i in range(0, len(items), rows):
        b = featurizer.collate(items[i:i + rows], min_width=width)
        feeds.append({"input_ids": b.input_ids.astype(np.int64), "attention_mask": b.attention_mask.astype(np.int64)})
    return feeds


def graph_accepts(model: onnx.ModelProto, feeds: Sequence[Feed]) -> bool:
    """Whether ``feeds`` give every input of the graph (a stage-2 graph needs pair inputs)."""
    wanted = {i.name for i in model.graph.input} - {i.name for i in model.graph.initializer}
    return bool(feeds) and all(wanted <= set(f) for f in feeds)


def _reader(feeds: Sequence[Feed], inputs: set[str]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class _Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[Feed] = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            feed = next(self._it, None)
            return None if feed is None else {k: v for k, v in feed.items() if k in inputs}

    return _Feeds()


def quantize_static_matmuls(src: str | Path, dst: str | Path, nodes: Iterable[str], feeds: Sequence[Feed],
                            method: str = DEFAULT_CALIBRATION_METHOD, reduce_range: bool = False,
                            percentile: float = 99.999) -> dict[str, Any]:
    """QDQ int8 of the MatMuls named ``nodes`` of ``src`` into ``dst``: weights int8 per
    output channel (symmetric), activations uint8 with ranges from ``feeds``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    nodes = list(nodes)
    model = onnx.load(str(src))
    inputs = {i.name for i in model.graph.input}
    extra: dict[str, Any] = {"MatMulConstBOnly": True, "WeightSymmetric": True}
    if method == "percentile":
        extra.update(CalibPercentile=percentile)
    quantize_static(
        str(src), str(dst), _reader(feeds, inputs), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
        nodes_to_quantize=nodes, per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8, calibrate_method={"minmax": CalibrationMethod.MinMax,
                                                       "percentile": CalibrationMethod.Percentile,
                                                       "entropy": CalibrationMethod.Entropy}[method],
        extra_options=extra,
    )
    return {"calibration": method, "calibration_batches": len(feeds),
            "calibration_rows": int(sum(len(next(iter(f.values()))) for f in feeds)),
            **({"percentile": percentile} if method == "percentile" else {})}
