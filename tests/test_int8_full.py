"""Full int8 policies (every weight MatMul int8): full-smooth (smoothed FFN inputs, then
dynamic) and full-static (QDQ, calibrated); what the graphs hold, what the manifest
records, where calibration comes from, and which policies auto tries."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from test_export import make_examples, tiny_ner
from test_joint import tiny_joint
from test_re import toy_examples

from nere.engine.manifest import read_manifest_json
from nere.export.bundle import write_bundle
from nere.export.quantize_static import calibration_feeds, graph_accepts
from nere.export.variants import INT8_POLICIES, needs_calibration
from nere.export.verify import verify_bundle


def _fp32_weight_matmuls(path: Path) -> list[str]:
    """MatMuls that still multiply by a float weight: an fp32 initializer read directly."""
    model = onnx.load(str(path))
    floats = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in floats]


def _export(model, tok, tmp: Path, name: str, policy: str, calibration=None) -> tuple[Path, dict]:
    tok_file = tmp / f"{name}-tokenizer.json"
    tok.save(str(tok_file))
    return write_bundle(model, model.config | {"task": model.task, "model": model.kind}, tok_file, tmp / name,
                        precision="int8", int8_policy=policy, calibration=calibration)


def test_full_policies_quantize_every_weight_matmul_of_a_bert(tmp_path, monkeypatch):
    """full-smooth and full-static: every weight MatMul int8, classifier included,
    calibrated on the sentences given; no fp32 weight MatMul left, nothing left in the
    working directory, the manifest says how, and the bundle still agrees with PyTorch."""
    monkeypatch.chdir(tmp_path)
    model, tok, feat = tiny_ner("bert-crf")
    texts = [ex.text for ex in make_examples()]
    feeds = calibration_feeds(feat, texts, rows=4)
    assert [len(f["input_ids"]) for f in feeds] == [4, 2]
    assert all(f["input_ids"].dtype == np.int64 and f["attention_mask"].shape == f["input_ids"].shape for f in feeds)
    for policy in ("full-smooth", "full-static"):
        out, m = _export(model, tok, tmp_path, policy, policy, calibration={"ner": feeds})
        assert _fp32_weight_matmuls(out / "ner.onnx") == []
        ops = [n.op_type for n in onnx.load(str(out / "ner.onnx")).graph.node]
        variant = m["made_by"]["variant"]["ner"]
        assert variant["policy"] == policy and variant["fp32_weight_nodes"] == []
        assert variant["quantized_nodes"] == 7  # q, k, v, attention output, FFN in and out, classifier
        if policy == "full-static":
            assert ops.count("DequantizeLinear") >= 2 * variant["quantized_nodes"] and "MatMulInteger" not in ops
            assert "quantize_static" in variant["method"] and variant["calibration"] == "minmax"
            assert variant["calibration_rows"] == len(texts)
        else:
            assert ops.count("MatMulInteger") == variant["quantized_nodes"] and "SmoothQuant" in variant["method"]
            # FFN out's input is the GELU's tail Mul by 0.5: folded; FFN in's needs a Mul node
            assert variant["smoothing"]["matmuls"] == 2 and variant["smoothing"]["folded"] == 1
            assert variant["smoothing"]["mul_nodes"] == 1
        res = verify_bundle(str(out), model, feat, make_examples(), batch_size=4, progress=False, threads=1)
        assert res["ner"]["max_abs_logit_diff"] < 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["full-smooth", "full-static", "full-smooth-tokenizer.json", "full-static-tokenizer.json"])


def test_smoothing_alone_changes_nothing_in_fp32(tmp_path):
    """Dividing activation channels and multiplying weight rows by the same factors is exact:
    the smoothed fp32 graph gives the same emissions (before any quantization)."""
    import onnxruntime as ort

    from nere.export.onnx_export import export_graph
    from nere.export.smoothing import smooth_graph

    model, _, feat = tiny_ner("bert-softmax")
    export_graph(model.export_graphs()[0], tmp_path / "fp32.onnx")
    graph = onnx.load(str(tmp_path / "fp32.onnx"))
    feeds = calibration_feeds(feat, [ex.text for ex in make_examples()], rows=3)
    counts = smooth_graph(graph, feeds, lambda name: "/encoder/" in name, alpha=0.75)
    assert counts["matmuls"] == 6 and counts["folded"] == 1  # q, k, v share one input
    onnx.checker.check_model(graph)
    def run(m):
        return [ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(["emissions"], f)[0] for f in feeds]

    for want, got in zip(run(str(tmp_path / "fp32.onnx")), run(graph.SerializeToString())):
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert not [n for n in graph.graph.node if n.op_type == "Constant" and
                not any(n.output[0] in m.input for m in graph.graph.node)]  # folded constants removed


@pytest.mark.parametrize("policy", ["full-smooth", "full-static"])
def test_calibrated_policy_quantizes_a_graph_without_calibration_inputs_dynamically(policy, tmp_path):
    """A joint model's stage 2 reads stage 1's hidden states and pair masks, which training
    sentences do not give: it is quantized dynamically, unsmoothed, and the manifest says so."""
    torch.manual_seed(0)
    exs = toy_examples()
    model, tok, feat, _ = tiny_joint(exs)
    model.eval()
    feeds = calibration_feeds(feat, [ex.text for ex in exs], rows=8)
    out, m = _export(model, tok, tmp_path, "joint", policy, calibration={"ner": feeds})
    variant = m["made_by"]["variant"]
    assert ("quantize_static" if policy == "full-static" else "SmoothQuant") in variant["ner"]["method"]
    assert variant["re"]["method"].startswith("onnxruntime quantize_dynamic")
    assert "dynamically" in variant["re"]["calibration"]
    for graph in ("ner.onnx", "re.onnx"):
        assert _fp32_weight_matmuls(out / graph) == []
    assert graph_accepts(onnx.load(str(out / "ner.onnx")), feeds)
    assert not graph_accepts(onnx.load(str(out / "re.onnx")), feeds)


def test_policy_names_and_calibration_needs():
    assert {"full-static", "full-smooth"} <= set(INT8_POLICIES)
    assert needs_calibration("full-static") and needs_calibration("full-smooth")
    assert not needs_calibration("head+ffn") and not needs_calibration("none")
    with pytest.raises(ValueError, match="calibration method"):
        from nere.export.quantize_static import quantize_static_matmuls

        quantize_static_matmuls("a.onnx", "b.onnx", [], [], method="kl")


def test_cli_calibrates_on_the_training_split(tmp_path):
    """`nere export --int8-policy full-smooth --verify DATA` calibrates on DATA's training
    sentences and records it; without --verify there is nothing to calibrate on: a one-line error."""
    from click.testing import CliRunner

    from nere.export.cli import export
    from nere.train.checkpoint import save_checkpoint
    from nere.train.datasets import write_jsonl

    model, tok, _ = tiny_ner("bert-softmax")
    ckpt = save_checkpoint(model, tok, tmp_path / "ckpt", {})
    data = tmp_path / "data"
    data.mkdir()
    for split, exs in (("train", make_examples()[:5]), ("test", make_examples())):
        write_jsonl(exs, data / f"{split}.jsonl")
    out = tmp_path / "bundle"
    res = CliRunner().invoke(export, [str(ckpt), "--out", str(out), "--precision", "int8", "--int8-policy",
                                      "full-smooth", "--verify", str(data), "--quiet", "--threads", "1"])
    # an untrained tiny model's near-tied emissions may fail the F1 gate: the bundle is written either way
    assert res.exit_code in (0, 1) and "parity:" in res.output, res.output
    variant = read_manifest_json(out)["made_by"]["variant"]["ner"]
    assert variant["policy"] == "full-smooth" and variant["smoothing"]["calibration_batches"] == 1
    assert _fp32_weight_matmuls(out / "ner.onnx") == []
    res = CliRunner().invoke(export, [str(ckpt), "--out", str(tmp_path / "x"), "--precision", "int8",
                                      "--int8-policy", "full-static"])
    assert res.exit_code == 2 and "add --verify DATASET" in res.output and "Traceback" not in res.output


def test_auto_without_training_sentences_skips_the_calibrated_policies(tmp_path):
    """auto on a dataset with no training split still chooses, among the policies that need
    no calibration, and says why full-smooth was not tried."""
    from click.testing import CliRunner

    from nere.export.cli import export
    from nere.train.checkpoint import save_checkpoint
    from nere.train.datasets import write_jsonl

    model, tok, _ = tiny_ner("bert-softmax")
    ckpt = save_checkpoint(model, tok, tmp_path / "ckpt", {})
    data = tmp_path / "data"
    data.mkdir()
    for split in ("dev", "test"):
        write_jsonl(make_examples()[:3], data / f"{split}.jsonl")
    out = tmp_path / "bundle"
    res = CliRunner().invoke(export, [str(ckpt), "--out", str(out), "--precision", "int8", "--int8-policy", "auto",
                                      "--verify", str(data), "--quiet", "--threads", "1"])
    assert res.exit_code in (0, 1) and "auto skips the policies that calibrate" in res.output, res.output
    tried = [c["policy"] for c in read_manifest_json(out)["made_by"]["int8_policy_selection"]["candidates"]]
    assert tried and "full-smooth" not in tried and tried[0] == "head+ffn-out"


def test_cli_int8_gate_per_task(tmp_path):
    """A joint int8 bundle is judged by its entities and triples against the fp32 bundle
    through the engine; an RE-only one (no engine path of its own) by its relation F1 on gold
    entities against PyTorch, also when auto chooses its policy; no scratch bundle is left."""
    from click.testing import CliRunner
    from test_export_re import tiny_model

    from nere.export.cli import export
    from nere.train.checkpoint import save_checkpoint
    from nere.train.datasets import write_jsonl

    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev", "test"):
        write_jsonl(make_examples(), data / f"{split}.jsonl")
    for task, kind, policy in (("joint", "bert-crf-multitask", "head+ffn"), ("re", "bilstm", "auto")):
        model, tok, _ = tiny_model(task, kind)
        ckpt = save_checkpoint(model, tok, tmp_path / f"{task}-ckpt", {})
        out = tmp_path / "out" / task
        res = CliRunner().invoke(export, [str(ckpt), "--out", str(out), "--precision", "int8", "--int8-policy",
                                          policy, "--verify", str(data), "--quiet", "--threads", "1"])
        assert res.exit_code in (0, 1) and "parity:" in res.output and "Traceback" not in res.output, res.output
        m = read_manifest_json(out)
        t = m["metrics"]["test"]
        if task == "joint":
            assert set(t["engine_loss"]) == {"entities", "triples"}
            for table in ("entities", "triples"):
                assert t["engine_loss"][table] == pytest.approx(t["engine_fp32"][table]["f1"] - t["engine"][table]["f1"])
            assert t["passed"] == all(v <= 0.005 for v in t["engine_loss"].values())
        else:
            assert "engine_loss" not in t and "engine_fp32" not in t
            assert t["passed"] == (t["f1_diff"] <= 0.005)
            sel = m["made_by"]["int8_policy_selection"]
            assert sel["tolerance"] == 0.005 and "fp32_engine_f1" not in sel
            assert all(set(c) == {"policy", "passed", "f1_diff"} for c in sel["candidates"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["joint", "re"]
