"""Export of NER checkpoints: graphs, manifest, parity, dynamic axes, variants, tampering,
and a bundle that runs where torch cannot be imported.

Models are tiny and untrained (random weights): parity is about the export, not accuracy.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from nere.engine.bundle import load_bundle
from nere.engine.core.types import Entity, Example, Relation
from nere.engine.errors import BundleError
from nere.engine.manifest import Manifest, read_manifest_json
from nere.export.bundle import write_bundle
from nere.export.cli import export
from nere.export.verify import ner_parity, summary, verify_bundle
from nere.train.checkpoint import TOKENIZER, save_checkpoint
from nere.train.ner_task import build_ner, predict_ner

TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
TINY_LSTM = {"embedding_dim": 16, "hidden_size": 16}
NER_KINDS = ["bert-crf", "bert-softmax", "bilstm-crf", "bilstm"]

_SENTS = [
    ("Alice Smith works for Acme Corp in Paris .", [("Alice Smith", "Per"), ("Acme Corp", "Org"), ("Paris", "Loc")],
     [(0, 1, "Work_For"), (1, 2, "Located_In")]),
    ("Bob Jones lives in London .", [("Bob Jones", "Per"), ("London", "Loc")], [(0, 1, "Live_In")]),
    ("Globex Inc hired Carol .", [("Globex Inc", "Org"), ("Carol", "Per")], [(1, 0, "Work_For")]),
    ("The weather in Paris was fine and Alice stayed home .", [("Paris", "Loc"), ("Alice", "Per")], [(1, 0, "Live_In")]),
    ("Nothing happened .", [], []),
    ("Acme Corp , based in London , sued Globex Inc over a contract signed by Bob .",
     [("Acme Corp", "Org"), ("London", "Loc"), ("Globex Inc", "Org"), ("Bob", "Per")], [(0, 1, "Located_In")]),
]


def make_examples() -> list[Example]:
    """Six hand-written sentences with entities and relations (char offsets found in text)."""
    out = []
    for text, ents, rels in _SENTS:
        entities, pos = [], 0
        for surface, label in ents:  # listed in text order
            start = text.index(surface, pos)
            entities.append(Entity(start, start + len(surface), label))
            pos = start + len(surface)
        out.append(Example(text, entities, [Relation(h, t, r) for h, t, r in rels]))
    return out


def tiny_ner(kind: str, max_length: int = 64):
    torch.manual_seed(0)
    model, tok, feat, _ = build_ner(kind, make_examples(), encoder="random", max_length=max_length,
                                    bert_size=TINY_BERT, lstm=TINY_LSTM)
    model.eval()
    if model.crf is not None:  # untrained CRFs are ~0: give Viterbi something to decide
        with torch.no_grad():
            model.crf.transitions.normal_(0, 1.0)
    return model, tok, feat


def export_tiny(model, tok, tmp: Path, precision: str = "fp32", name: str = "bundle") -> Path:
    tok_file = tmp / f"{name}-tokenizer.json"
    tok.save(str(tok_file))
    out, _ = write_bundle(model, model.config | {"task": model.task, "model": model.kind}, tok_file, tmp / name,
                          precision=precision, command="pytest")
    return out


@pytest.fixture(scope="module")
def ner_bundles(tmp_path_factory):
    """kind -> (model, featurizer, fp32 bundle folder)."""
    root = tmp_path_factory.mktemp("ner")
    out = {}
    for kind in NER_KINDS:
        model, tok, feat = tiny_ner(kind)
        out[kind] = (model, feat, export_tiny(model, tok, root, name=kind))
    return out


@pytest.mark.parametrize("kind", NER_KINDS)
def test_ner_bundle_contents_and_parity(kind, ner_bundles):
    model, feat, folder = ner_bundles[kind]
    m = read_manifest_json(folder)
    Manifest(m)
    crf = kind.endswith("crf")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["manifest.json", "ner.onnx", "tokenizer.json"] + (["crf.npz"] if crf else []))
    assert set(m["files"]) == {p.name for p in folder.iterdir()} - {"manifest.json"}
    assert (m["task"], m["model"], m["precision"], m["re"]) == ("ner", kind, "fp32", None)
    assert m["ner"]["decoding"] == ("crf" if crf else "softmax")
    assert m["graphs"]["stage1"]["recurrent"] is kind.startswith("bilstm")  # read from the graph's operators
    assert m["ner"]["tags"] == model.tagset.tags and m["ner"]["entity_labels"] == ["Loc", "Org", "Per"]
    assert m["tokenizer"]["max_length"] == model.config["featurizer"]["max_length"]
    assert m["tokenizer"]["cls_token"] == ("[CLS]" if kind.startswith("bert") else None)
    io = m["graphs"]["stage1"]
    assert [i["name"] for i in io["inputs"]] == ["input_ids", "attention_mask"]
    assert io["outputs"] == [{"name": "emissions", "dtype": "float32", "shape": ["batch", "seq", len(model.tagset.tags)]}]
    assert m["made_by"]["export_seconds"] > 0 and m["made_by"]["bundle_bytes"] > 0
    if crf:
        with np.load(folder / "crf.npz") as z:
            np.testing.assert_array_equal(z["transitions"], model.crf.transitions.detach().numpy())

    bundle = load_bundle(folder, device="cpu", threads=1)
    result = ner_parity(bundle, model, feat, make_examples(), batch_size=4, progress=False)
    assert result["agreement"] == 1.0 and result["differing_sentences"] == []
    assert result["max_abs_logit_diff"] <= 1e-4
    assert result["f1"] == result["torch_f1"] and result["featurization_mismatch"] == 0
    # the PyTorch side of the check is the training code's own prediction
    assert result["torch_f1"] == pytest.approx(_torch_f1(model, feat))


def _torch_f1(model, feat) -> float:
    from nere.engine.core.metrics import entity_scores

    out = predict_ner(model, feat, make_examples(), batch_size=4)
    return entity_scores(out["gold_spans"], out["spans"])["f1"]


@pytest.mark.parametrize("kind", ["bert-crf", "bilstm"])
def test_dynamic_batch_and_sequence_axes(kind, ner_bundles):
    model, _, folder = ner_bundles[kind]
    sess = ort.InferenceSession(str(folder / "ner.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    vocab = model.config["encoder"].get("vocab_size") or model.config["encoder"]["hf_config"]["vocab_size"]
    for batch, width in [(1, 4), (3, 13), (3, 29), (1, 40)]:
        ids = rng.integers(5, vocab, size=(batch, width))
        mask = np.ones_like(ids)
        if batch > 1:  # ragged rows: a left-aligned prefix mask, padding id 0
            mask[1, width // 2:] = 0
            ids[mask == 0] = 0
        got = sess.run(["emissions"], {"input_ids": ids, "attention_mask": mask})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        assert got.shape == (batch, width, len(model.tagset.tags))
        valid = mask.astype(bool)
        np.testing.assert_allclose(got[valid], want[valid], atol=1e-4)


def test_validator_names_the_bad_field(ner_bundles):
    good = read_manifest_json(ner_bundles["bert-crf"][2])
    cases = {
        "precision": lambda m: m.update(precision="fp8"),
        "format_version": lambda m: m.update(format_version=2),
        "ner section": lambda m: m.update(ner=None),
        "re section": lambda m: m.update(re={"relation_labels": ["no_relation", "X"]}),
        "tokenizer file": lambda m: m["files"].pop("tokenizer.json"),
        "sha256": lambda m: m["files"].update({"ner.onnx": "abc"}),
        "emissions": lambda m: m["graphs"]["stage1"]["outputs"][0].update(name="logits"),
        "dtype": lambda m: m["graphs"]["stage1"]["inputs"][0].update(dtype="int7"),
        "ner.crf": lambda m: m["ner"].update(crf="other.npz"),
        "made_by": lambda m: m.pop("made_by"),
    }
    for what, change in cases.items():
        m = json.loads(json.dumps(good))
        change(m)
        with pytest.raises(BundleError, match="bundle manifest.json: "):
            Manifest(m)
    Manifest(good)


def test_tampered_bundle_refused(ner_bundles, tmp_path):
    import shutil

    folder = Path(shutil.copytree(ner_bundles["bert-crf"][2], tmp_path / "b"))
    load_bundle(folder, device="cpu", threads=1)  # pristine copy loads
    data = bytearray((folder / "crf.npz").read_bytes())
    data[-20] ^= 0xFF
    (folder / "crf.npz").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"crf\.npz.*sha256 mismatch"):
        load_bundle(folder, device="cpu")
    # labels edited and files re-hashed: tags no longer match scheme x labels
    folder2 = Path(shutil.copytree(ner_bundles["bert-crf"][2], tmp_path / "c"))
    m = read_manifest_json(folder2)
    m["ner"]["entity_labels"] = ["Loc", "Per", "Org"]
    (folder2 / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="ner.tags"):
        load_bundle(folder2, device="cpu")


def test_int8_quantizes_encoder_only_and_leaves_no_files(ner_bundles, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for kind in ("bert-crf", "bilstm"):
        model, feat, _ = ner_bundles[kind]
        tok_file = ner_bundles[kind][2] / TOKENIZER
        out, m = write_bundle(model, model.config, tok_file, tmp_path / f"{kind}-int8", precision="int8")
        ops = {n.op_type for n in onnx.load(str(out / "ner.onnx")).graph.node}
        matmuls = [n.name for n in onnx.load(str(out / "ner.onnx")).graph.node if n.op_type == "MatMul"]
        assert ("MatMulInteger" in ops) if kind.startswith("bert") else ("DynamicQuantizeLSTM" in ops)
        assert m["graphs"]["stage1"]["recurrent"] is (kind == "bilstm")  # also the quantized LSTM
        assert any("classifier" in n for n in matmuls)  # the head stays fp32
        kept = m["made_by"]["variant"]["ner"]["fp32_weight_nodes"]
        assert kept == (["/encoder/bert/encoder/layer.0/intermediate/dense/MatMul",
                         "/encoder/bert/encoder/layer.0/output/dense/MatMul", "/classifier/MatMul"]
                        if kind.startswith("bert") else ["/classifier/MatMul"])
        res = verify_bundle(str(out), model, feat, make_examples(), batch_size=4, progress=False, threads=1)
        assert res["ner"]["max_abs_logit_diff"] < 0.1  # quantized, but still the same model
        assert summary(res, "int8")["thresholds"]["max_engine_loss"] == 0.005
    assert list(cwd.iterdir()) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp bundle folders left


def _lstms(path: Path) -> list[onnx.NodeProto]:
    return [n for n in onnx.load(str(path)).graph.node if n.op_type in ("LSTM", "DynamicQuantizeLSTM")]


def _direction(node: onnx.NodeProto) -> str:
    found = [onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "direction"]
    return found[0].decode() if found else "forward"


@pytest.mark.parametrize("kind", ["bilstm", "bilstm-crf"])
def test_bilstm_backward_pass_is_a_reverse_lstm(kind, ner_bundles, tmp_path):
    """The export folds the encoder's two reversals into the backward LSTM's own reverse
    direction over the lengths (export/lstm_graph.py): no gathers left, and the graph
    equals the module at every position, padding included, on random lengths."""
    model, _, folder = ner_bundles[kind]
    assert read_manifest_json(folder)["made_by"]["graph_rewrites"] == {"ner": {"lstm_reversals_folded": 1}}
    graph = onnx.load(str(folder / "ner.onnx")).graph
    assert "GatherElements" not in {n.op_type for n in graph.node}
    lstms = _lstms(folder / "ner.onnx")
    assert sorted(_direction(n) for n in lstms) == ["forward", "reverse"]
    backward = next(n for n in lstms if _direction(n) == "reverse")
    assert backward.input[4]  # it reads the sequence lengths
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 12, size=9)
    lengths[0] = 11
    mask = (np.arange(11)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(4, model.encoder.embedding.num_embeddings, size=mask.shape) * mask
    sess = ort.InferenceSession(str(folder / "ner.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    assert np.abs(got - want).max() < 1e-5
    tok_file = folder / TOKENIZER
    out, m = write_bundle(model, model.config, tok_file, tmp_path / "int8", precision="int8")
    quantized = _lstms(out / "ner.onnx")
    assert [n.op_type for n in quantized] == ["DynamicQuantizeLSTM"] * 2
    assert sorted(_direction(n) for n in quantized) == ["forward", "reverse"]
    assert m["made_by"]["graph_rewrites"] == {"ner": {"lstm_reversals_folded": 1}}


def test_stacked_bilstm_backward_layers_all_run_in_reverse(tmp_path):
    torch.manual_seed(0)
    model, tok, _, _ = build_ner("bilstm-crf", make_examples(), encoder="random", max_length=64, bert_size=TINY_BERT,
                                 lstm={**TINY_LSTM, "num_layers": 2})
    folder = export_tiny(model.eval(), tok, tmp_path)
    assert read_manifest_json(folder)["made_by"]["graph_rewrites"] == {"ner": {"lstm_reversals_folded": 1}}
    assert sorted(_direction(n) for n in _lstms(folder / "ner.onnx")) == ["forward", "forward", "reverse", "reverse"]
    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 10, size=7)
    lengths[0] = 9
    mask = (np.arange(9)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(4, model.encoder.embedding.num_embeddings, size=mask.shape) * mask
    got = ort.InferenceSession(str(folder / "ner.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input_ids": ids, "attention_mask": mask})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    assert np.abs(got - want).max() < 1e-5


def test_lstm_reversal_pass_leaves_other_graphs_alone(ner_bundles):
    from nere.export.lstm_graph import fold_lstm_reversals

    graph = onnx.load(str(ner_bundles["bert-crf"][2] / "ner.onnx"))
    before = graph.SerializeToString()
    assert fold_lstm_reversals(graph) == 0 and graph.SerializeToString() == before
    assert "graph_rewrites" not in read_manifest_json(ner_bundles["bert-crf"][2])["made_by"]
    folded = onnx.load(str(ner_bundles["bilstm"][2] / "ner.onnx"))
    assert fold_lstm_reversals(folded) == 0  # already folded: its backward LSTM reads lengths


def test_int8_policies_choose_weight_matmuls(ner_bundles):
    from nere.export.variants import INT8_POLICIES, int8_plan

    graph = onnx.load(str(ner_bundles["bert-softmax"][2] / "ner.onnx"))
    plans = {p: int8_plan(graph, p) for p in INT8_POLICIES}
    layer = "/encoder/bert/encoder/layer.0/"
    weights = {f"{layer}attention/self/{x}/MatMul" for x in ("query", "key", "value")} | {
        f"{layer}attention/output/dense/MatMul", f"{layer}intermediate/dense/MatMul"}
    assert set(plans["none"]["quantize"]) == weights | {f"{layer}output/dense/MatMul", "/classifier/MatMul"}
    assert set(plans["head"]["quantize"]) == weights | {f"{layer}output/dense/MatMul"}
    assert set(plans["head+ffn-out"]["quantize"]) == weights  # attention-score MatMuls never: no weights
    assert set(plans["head+ffn"]["quantize"]) == weights - {f"{layer}intermediate/dense/MatMul"}
    assert set(plans["head+ffn+attn-out"]["quantize"]) == weights - {
        f"{layer}intermediate/dense/MatMul", f"{layer}attention/output/dense/MatMul"}
    assert plans["embeddings"]["quantize"] == []
    for plan in plans.values():  # the tiny model's tables are too small to be worth int8
        assert plan["embeddings"] == []
    with pytest.raises(ValueError, match="int8 policy"):
        int8_plan(graph, "all")


def test_int8_plan_quantizes_vocabulary_tables_not_position_tables():
    """A table of 2,048+ rows (characters, bigrams, word pieces) goes int8 per row; a
    position table (512 rows) stays fp32 however wide it is."""
    from onnx import TensorProto, helper, numpy_helper

    from nere.export.variants import int8_plan

    tables = {"chars": np.zeros((5000, 16), np.float32), "positions": np.zeros((512, 384), np.float32),
              "tiny": np.zeros((3000, 8), np.float32)}
    nodes = [helper.make_node("Gather", [name, "ids"], [f"{name}_out"], name=f"/{name}/Gather") for name in tables]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
                              [helper.make_tensor_value_info(f"{n}_out", TensorProto.FLOAT, None) for n in tables],
                              [numpy_helper.from_array(a, n) for n, a in tables.items()])
    assert int8_plan(helper.make_model(graph))["embeddings"] == ["/chars/Gather"]


def test_fp16_graph_is_valid_and_runs_on_cpu(ner_bundles, tmp_path):
    model, feat, folder = ner_bundles["bert-softmax"]
    out, m = write_bundle(model, model.config, folder / TOKENIZER, tmp_path / "fp16", precision="fp16")
    onnx.checker.check_model(str(out / "ner.onnx"))
    g = onnx.load(str(out / "ner.onnx"))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in g.graph.initializer)
    io = m["graphs"]["stage1"]
    assert io["outputs"][0]["dtype"] == "float32" and io["inputs"][0]["dtype"] == "int64"  # keep_io_types
    res = verify_bundle(str(out), model, feat, make_examples(), batch_size=4, progress=False, threads=1)
    assert res["ner"]["max_abs_logit_diff"] < 0.05


def test_existing_output_refused_unless_overwrite(ner_bundles, tmp_path):
    model, _, folder = ner_bundles["bilstm"]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_bundle(model, model.config, folder / TOKENIZER, tmp_path / "out")
    out, _ = write_bundle(model, model.config, folder / TOKENIZER, tmp_path / "out", overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "manifest.json").is_file()


_NO_TORCH = textwrap.dedent("""
    import importlib.abc, json, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this process")
            return None

    sys.meta_path.insert(0, Block())
    from nere.engine.bundle import load_bundle
    from nere.engine.core.decode import decode_tags, row_char_spans

    bundle = load_bundle(sys.argv[1], device="cpu", threads=1)
    texts = json.loads(sys.argv[2])
    f = bundle.featurizer
    encs = [f.truncate(e)[0] for e in f.tokenize(texts)]
    batch = f.collate(encs)
    em = bundle.stage1.session.run(["emissions"], {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})[0]
    tags = decode_tags(em, batch.lengths, bundle.ner.crf)
    spans = [row_char_spans(bundle.ner.tagset, tags[i], batch.offsets[i], f.lead, len(e.ids), texts[i])
             for i, e in enumerate(encs)]
    assert "torch" not in sys.modules
    print(json.dumps(spans))
""")


@pytest.mark.parametrize("kind", ["bert-crf", "bilstm"])
def test_bundle_runs_without_torch(kind, ner_bundles):
    model, feat, folder = ner_bundles[kind]
    texts = [ex.text for ex in make_examples()]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, str(folder), json.dumps(texts)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = [[tuple(s) for s in row] for row in json.loads(proc.stdout)]
    want = predict_ner(model, feat, make_examples(), batch_size=8)["spans"]
    assert got == [list(map(tuple, row)) for row in want]


def test_torch_blocker_really_blocks():
    code = _NO_TORCH.split("from nere.engine")[0] + "import torch\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "torch is blocked" in proc.stderr


def _write_jsonl_dataset(folder: Path) -> Path:
    from nere.train.datasets import write_jsonl

    folder.mkdir()
    write_jsonl(make_examples(), folder / "test.jsonl")
    return folder


def test_cli_export_verify_records_metrics(ner_bundles, tmp_path):
    model, _, folder = ner_bundles["bilstm-crf"]
    tok = __import__("tokenizers").Tokenizer.from_file(str(folder / TOKENIZER))
    ckpt = save_checkpoint(model, tok, tmp_path / "ckpt", {})
    data = _write_jsonl_dataset(tmp_path / "data")
    out = tmp_path / "bundle"
    res = CliRunner().invoke(export, [str(ckpt), "--out", str(out), "--verify", str(data), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "parity: passed" in res.output
    m = read_manifest_json(out)
    t = m["metrics"]["test"]
    assert t["agreement"] == 1.0 and t["passed"] and t["sentences"] == len(_SENTS)
    assert t["f1"] == t["torch_f1"] and t["max_abs_logit_diff"] <= 1e-4
    assert m["made_by"]["command"].startswith("nere export ")
    load_bundle(out, device="cpu", threads=1)  # metrics written after hashing: still loads

    again = CliRunner().invoke(export, [str(ckpt), "--out", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.output and "Traceback" not in again.output
    bad = CliRunner().invoke(export, [str(ckpt), "--out", str(tmp_path / "b2"), "--verify", "nosuchdata"])
    assert bad.exit_code == 1 and "unknown dataset" in bad.output
    assert not (tmp_path / "b2").exists()


def test_cli_failed_parity_exits_nonzero(ner_bundles, tmp_path, monkeypatch):
    """A bundle that disagrees with PyTorch (its emissions shifted by one tag) fails the command."""
    import nere.export.verify as verify

    model, _, folder = ner_bundles["bilstm"]
    tok = __import__("tokenizers").Tokenizer.from_file(str(folder / TOKENIZER))
    ckpt = save_checkpoint(model, tok, tmp_path / "ckpt", {})
    data = _write_jsonl_dataset(tmp_path / "data")
    real = verify.run_stage1

    def shifted(bundle, batch, outputs):  # a broken graph: emissions rolled by one tag
        out = real(bundle, batch, outputs)
        out["emissions"] = np.roll(out["emissions"], 1, axis=-1)
        return out

    monkeypatch.setattr(verify, "run_stage1", shifted)
    res = CliRunner().invoke(export, [str(ckpt), "--out", str(tmp_path / "b"), "--verify", str(data), "--quiet"])
    assert res.exit_code == 1 and "verification failed" in res.output
    assert read_manifest_json(tmp_path / "b")["metrics"]["test"]["passed"] is False


def test_set_metrics_keeps_bundle_loadable(ner_bundles, tmp_path):
    import shutil

    from nere.export.bundle import set_metrics

    folder = Path(shutil.copytree(ner_bundles["bilstm"][2], tmp_path / "b"))
    set_metrics(folder, "dev", {"f1": 0.5})
    assert read_manifest_json(folder)["metrics"]["dev"] == {"f1": 0.5}
    load_bundle(folder, device="cpu", threads=1)
    m = read_manifest_json(folder)
    m["precision"] = "bf16"
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="precision"):  # never records metrics into a bad manifest
        set_metrics(folder, "test", {"f1": 0.1})


def test_embedding_rows_quantized_per_row():
    """Gather(table) -> int8 table with a scale per row: each gathered row within half a step
    of its own scale, zero rows exact, the fp32 table gone, the output name unchanged."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from nere.export.variants import quantize_embedding_rows

    rng = np.random.default_rng(0)
    table = rng.normal(size=(50, 8)).astype(np.float32) * rng.uniform(0.01, 10, size=(50, 1)).astype(np.float32)
    table[7] = 0.0
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["emb"], name="emb_gather", axis=0),
         helper.make_node("Relu", ["emb"], ["out"], name="relu")],
        "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "t"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", "t", 8])],
        initializer=[numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert quantize_embedding_rows(model, ["emb_gather"]) == 1
    onnx.checker.check_model(model)
    assert "table" not in {i.name for i in model.graph.initializer}
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.array([[0, 7, 49], [3, 3, 12]], dtype=np.int64)
    got = sess.run(["out"], {"ids": ids})[0]
    want = np.maximum(table[ids], 0)
    step = np.abs(table).max(axis=1) / 127
    assert (np.abs(got - want) <= step[ids][..., None] / 2 + 1e-6).all()
    assert (got[0, 1] == 0).all()


def test_auto_falls_back_to_the_most_accurate_measured_policy():
    """When no candidate passes on dev, auto keeps the smallest worst-table loss against fp32
    (not simply the last candidate; a gain is not a loss); the faster of equals."""
    from nere.export.variants import most_accurate_policy

    tried = [{"policy": "head+ffn-out", "engine_loss": {"entities": 0.0066, "triples": 0.0032}},
             {"policy": "head+ffn", "engine_loss": {"entities": 0.0026, "triples": 0.0034}},
             {"policy": "embeddings", "engine_loss": {"entities": -0.0100, "triples": 0.0041}}]
    assert most_accurate_policy(tried) == "head+ffn"
    assert most_accurate_policy([{"policy": "a", "engine_loss": {"entities": 0.003}},
                                 {"policy": "b", "engine_loss": {"entities": 0.003}}]) == "a"
    assert most_accurate_policy([{"policy": "a", "f1_diff": {"re": 0.004}},  # RE-only: vs PyTorch
                                 {"policy": "b", "f1_diff": {"re": 0.001}}]) == "b"
    with pytest.raises(ValueError):
        most_accurate_policy([])


def _fake_engine_scores(f1_by_folder: dict[str, tuple[float, float]]):
    """engine_scores stand-in: (entity F1, triple F1) by the bundle folder's name."""
    def scores(bundle, examples, threads=None):
        ent, tri = f1_by_folder[Path(str(bundle)).name]
        return {"documents": len(examples), "entities": {"precision": ent, "recall": ent, "f1": ent},
                "triples": {"precision": tri, "recall": tri, "f1": tri}}, None
    return scores


def test_auto_picks_the_first_policy_within_the_dev_share_of_fp32(tmp_path, monkeypatch):
    """auto scores the fp32 bundle once, then each candidate fastest first, through the
    engine on dev: the first whose every loss is within AUTO_DEV_SHARE of the tolerance is
    chosen (a gain passes); when none is, the smallest worst loss, and each record says why."""
    from contextlib import contextmanager

    import nere.export.cli as cli
    import nere.export.verify as verify
    from nere.export.variants import AUTO_DEV_SHARE

    @contextmanager
    def no_export(model, config, checkpoint, out, precision, policy="", calibration=None):
        yield out.parent / f".{out.name}.int8-{policy}"

    monkeypatch.setattr(cli, "_scratch_bundle", no_export)
    fp32_made = []

    def fp32_folder():
        fp32_made.append(1)
        return tmp_path / "fp32"

    model = type("M", (), {"encoder_type": "bert"})()
    limit = verify.THRESHOLDS["int8"]["max_engine_loss"] * AUTO_DEV_SHARE
    f1 = {"fp32": (0.80, 0.50), ".b.int8-full-smooth": (0.80 - 2 * limit, 0.50),
          ".b.int8-head+ffn-out": (0.80 - limit / 2, 0.51), ".b.int8-head+ffn": (0.80, 0.50),
          ".b.int8-embeddings": (0.80, 0.50)}
    monkeypatch.setattr(verify, "engine_scores", _fake_engine_scores(f1))

    def choose():
        return cli._choose_int8_policy(model, None, {}, tmp_path / "ckpt", tmp_path / "b", [None] * 3, 4, 1, True,
                                       {"ner": []}, fp32_folder)

    chosen, sel = choose()
    assert chosen == "head+ffn-out" and len(fp32_made) == 1
    assert [c["policy"] for c in sel["candidates"]] == ["full-smooth", "head+ffn-out"]
    first, second = sel["candidates"]
    assert not first["passed"] and first["engine_loss"]["entities"] == pytest.approx(2 * limit)
    assert second["passed"] and second["engine_loss"]["triples"] == pytest.approx(-0.01)  # a gain is no loss
    assert second["engine_f1"] == {"entities": pytest.approx(0.80 - limit / 2), "triples": 0.51}
    assert sel["fp32_engine_f1"] == {"entities": 0.80, "triples": 0.50} and sel["dev_limit"] == limit

    f1.update({".b.int8-head+ffn-out": (0.80 - 3 * limit, 0.50), ".b.int8-head+ffn": (0.80, 0.50 - 1.5 * limit),
               ".b.int8-embeddings": (0.80 - 1.2 * limit, 0.50 + 0.1)})
    chosen, sel = choose()
    assert [c["policy"] for c in sel["candidates"]] == ["full-smooth", "head+ffn-out", "head+ffn", "embeddings"]
    assert not any(c["passed"] for c in sel["candidates"]) and chosen == sel["chosen"] == "embeddings"


def test_cli_int8_policy_auto_chooses_on_dev(ner_bundles, tmp_path, monkeypatch):
    """auto tries the candidate policies fastest first on the dev split and records why."""
    import nere.export.verify as verify
    from nere.export.variants import auto_int8_candidates
    from nere.train.datasets import write_jsonl

    AUTO_INT8_CANDIDATES = auto_int8_candidates("bert")
    # all-MatMul int8 for transformers only with smoothed FFN inputs; every MatMul fp32 is the last resort
    assert AUTO_INT8_CANDIDATES == ("full-smooth", "head+ffn-out", "head+ffn", "embeddings")
    assert auto_int8_candidates("bilstm") == ("none", "head+ffn-out", "head+ffn", "embeddings")

    model, _, folder = ner_bundles["bert-crf"]
    tok = __import__("tokenizers").Tokenizer.from_file(str(folder / TOKENIZER))
    ckpt = save_checkpoint(model, tok, tmp_path / "ckpt", {})
    data = _write_jsonl_dataset(tmp_path / "data")
    write_jsonl(make_examples()[:3], data / "dev.jsonl")
    write_jsonl(make_examples(), data / "train.jsonl")  # calibration sentences of full-smooth
    out = tmp_path / "out" / "bundle"
    res = CliRunner().invoke(export, [str(ckpt), "--out", str(out), "--precision", "int8", "--int8-policy", "auto",
                                      "--verify", str(data), "--quiet", "--threads", "1"])
    assert res.exit_code == 0, res.output
    sel = read_manifest_json(out)["made_by"]["int8_policy_selection"]
    assert sel["split"] == "dev" and sel["sentences"] == 3 and sel["tolerance"] == 0.005 and sel["dev_limit"] == 0.0025
    assert sel["candidates"][0]["policy"] == AUTO_INT8_CANDIDATES[0] and sel["candidates"][0]["passed"]
    assert sel["chosen"] == AUTO_INT8_CANDIDATES[0] and len(sel["candidates"]) == 1
    assert read_manifest_json(out)["made_by"]["variant"]["ner"]["policy"] == sel["chosen"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["bundle"]  # scratch bundles removed

    # nothing passes: the most accurate candidate measured is kept (the fastest of equals), with a warning
    monkeypatch.setitem(verify.THRESHOLDS, "int8", {**verify.THRESHOLDS["int8"], "max_engine_loss": -10.0})
    res = CliRunner().invoke(export, [str(ckpt), "--out", str(out), "--precision", "int8", "--int8-policy", "auto",
                                      "--verify", str(data), "--quiet", "--overwrite", "--threads", "1"])
    assert res.exit_code == 1 and "no int8 policy stays within" in res.output
    sel = read_manifest_json(out)["made_by"]["int8_policy_selection"]
    assert [c["policy"] for c in sel["candidates"]] == list(AUTO_INT8_CANDIDATES)
    worst = [max(c["engine_loss"].values()) for c in sel["candidates"]]
    assert sel["chosen"] == AUTO_INT8_CANDIDATES[worst.index(min(worst))]
    assert not any(c["passed"] for c in sel["candidates"])
    assert f"using the most accurate measured, {sel['chosen']}" in res.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["bundle"]

    for args, msg in ((["--int8-policy", "auto"], "--precision int8"),
                      (["--precision", "int8", "--int8-policy", "auto"], "--verify DATASET")):
        res = CliRunner().invoke(export, [str(ckpt), "--out", str(tmp_path / "x"), *args])
        assert res.exit_code == 2 and msg in res.output and "Traceback" not in res.output


def _every_token_per(model) -> None:
    """Make a softmax NER model tag every token S-Per: its F1 on the sentences is above 0
    (the single-token people), so a bundle that tags nothing differs from it in F1."""
    tag = model.tagset.tags.index("S-Per")
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.bias[tag] = 10.0


def test_summary_gates():
    """fp16 has no agreement floor: the F1 difference vs PyTorch is its gate (NaN fails).
    int8 with an engine path: only the loss against fp32 through the engine fails it (one-
    sided, NaN fails); the sentence-level difference is recorded, not judged; unmeasured
    fails. An RE-only int8 bundle keeps the F1 difference on gold entities."""
    base = {"agreement": 1.0, "f1_diff": 0.0}
    assert summary({"ner": base}, "fp16")["passed"]
    for diff in (0.0051, float("nan")):
        got = summary({"ner": {**base, "f1_diff": diff}}, "fp16")
        assert not got["passed"] and len(got["problems"]) == 1 and "F1 differs" in got["problems"][0]
    assert summary({"ner": {**base, "agreement": 0.0, "f1_diff": 0.004}}, "fp16")["passed"]

    engine = {"documents": 6, "entities": {"f1": 0.5}, "triples": {"f1": 0.3}}
    noisy = {"ner": {**base, "f1_diff": 0.02}, "re": {**base, "f1_diff": 0.03}, "engine": engine}
    got = summary({**noisy, "engine_loss": {"entities": 0.005, "triples": -0.2}}, "int8")
    assert got["passed"] and got["f1_diff"] == 0.02 and got["engine_loss"]["triples"] == -0.2
    for loss in (0.0051, float("nan")):
        got = summary({**noisy, "engine_loss": {"entities": 0.0, "triples": loss}}, "int8")
        assert not got["passed"] and len(got["problems"]) == 1 and got["problems"][0].startswith("triples F1 through")
    got = summary(noisy, "int8")
    assert not got["passed"] and "engine_loss not measured" in got["problems"][0]
    re_only = {"re": {**base, "f1_diff": 0.0051}}
    assert not summary(re_only, "int8")["passed"]
    assert summary({"re": {**base, "f1_diff": 0.004}}, "int8")["passed"]


def test_engine_loss_is_fp32_minus_bundle_per_table():
    from nere.export.verify import engine_loss

    fp32 = {"entities": {"f1": 0.8}, "triples": {"f1": 0.5}}
    assert engine_loss(fp32, {"entities": {"f1": 0.79}, "triples": {"f1": 0.52}}) == pytest.approx(
        {"entities": 0.01, "triples": -0.02})
    assert engine_loss({"entities": {"f1": 0.8}, "triples": None}, {"entities": {"f1": 0.8}, "triples": None}) == {
        "entities": 0.0}


def test_cli_int8_gate_is_the_loss_against_fp32_through_the_engine(tmp_path, monkeypatch):
    """--precision int8 --verify also scores a scratch fp32 bundle through the engine and
    records engine_fp32 and engine_loss. A sentence-level F1 difference from PyTorch alone
    (emissions replaced by zeros on the parity path only) passes; entities lost through the
    engine fail; the scratch fp32 bundle is removed either way."""
    import nere.export.verify as verify

    model, tok, _ = tiny_ner("bilstm")
    _every_token_per(model)
    ckpt = save_checkpoint(model, tok, tmp_path / "ckpt", {})
    data = _write_jsonl_dataset(tmp_path / "data")
    real_stage1, real_engine = verify.run_stage1, verify.engine_predictions

    def nothing(bundle, batch, outputs):
        out = real_stage1(bundle, batch, outputs)
        out["emissions"] = np.zeros_like(out["emissions"])
        return out

    monkeypatch.setattr(verify, "run_stage1", nothing)
    args = [str(ckpt), "--out", str(tmp_path / "out" / "b"), "--precision", "int8", "--verify", str(data), "--quiet"]
    res = CliRunner().invoke(export, args)
    assert res.exit_code == 0 and "parity: passed" in res.output, res.output
    t = read_manifest_json(tmp_path / "out" / "b")["metrics"]["test"]
    assert t["torch_f1"] > 0 and t["f1"] == 0 and t["f1_diff"] > 0.005 and t["passed"]  # recorded, not judged
    assert t["engine_fp32"]["entities"]["f1"] > 0 and "headline" not in t["engine_fp32"]
    assert t["engine_loss"] == {"entities": t["engine_fp32"]["entities"]["f1"] - t["engine"]["entities"]["f1"]}
    assert t["thresholds"]["max_engine_loss"] == 0.005 and "F1 lost against the fp32 bundle" in res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b"]

    def int8_finds_nothing(engine, texts):
        ents, triples = real_engine(engine, texts)
        return ([[] for _ in ents] if engine.bundle.manifest["precision"] == "int8" else ents), triples

    monkeypatch.setattr(verify, "engine_predictions", int8_finds_nothing)
    res = CliRunner().invoke(export, [*args, "--overwrite"])
    assert res.exit_code == 1 and "verification failed" in res.output and "Traceback" not in res.output
    t = read_manifest_json(tmp_path / "out" / "b")["metrics"]["test"]
    assert not t["passed"] and t["engine_loss"]["entities"] == t["engine_fp32"]["entities"]["f1"] > 0.005
    assert t["problems"] == ["entities F1 through the engine {:.4f} below the fp32 bundle's (tolerance 0.005)"
                             .format(t["engine_loss"]["entities"])]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b"]


def test_cli_export_writes_card_training_and_headline(tmp_path):
    """The card (README.md) sits in the bundle, is not hashed, and names the labels, the
    training and export commands (int8 policy explicit) and the measured figures; the
    manifest records the headline figure measured through the engine."""
    from nere.engine.manifest import CARD, Manifest

    model, tok, _ = tiny_ner("bilstm")
    _every_token_per(model)  # int8 then decodes exactly as PyTorch does
    train_metrics = {"command": "nere train ner --model bilstm --dataset tiny --out ckpt", "dataset": "tiny",
                     "split_sizes": [6, 6, 6], "best_epoch": 1, "hardware": "test", "seconds": 1.0,
                     "test": {"accuracy": 0.5, "precision": 0.25, "recall": 0.5, "f1": 0.3333, "per_label": {}}}
    ckpt = save_checkpoint(model, tok, tmp_path / "ckpt", train_metrics)
    data = _write_jsonl_dataset(tmp_path / "data")
    out = tmp_path / "bundle"
    res = CliRunner().invoke(export, [str(ckpt), "--out", str(out), "--precision", "int8", "--verify", str(data),
                                      "--quiet", "--threads", "1"])
    assert res.exit_code == 0, res.output
    m = Manifest.read(out)
    assert CARD not in m.files and (out / CARD).is_file()
    assert m.made_by["training"]["command"] == train_metrics["command"]
    assert m.made_by["training"]["test"] == {"ner": {"precision": 0.25, "recall": 0.5, "f1": 0.3333}}
    t = m.metrics["test"]
    assert t["headline"] == {"metric": "entity_f1", "value": t["engine"]["entities"]["f1"], "through": "engine"}
    assert t["engine"]["entities"]["f1"] == pytest.approx(t["engine_f1"]) and t["engine"]["triples"] is None
    card = (out / CARD).read_text()
    assert "Loc, Org, Per" in card and train_metrics["command"] in card and "--int8-policy head+ffn" in card
    assert f"entity_f1 {t['headline']['value']:.4f}" in card and "parity passed" in card
    ent = t["engine"]["entities"]["f1"], t["engine_fp32"]["entities"]["f1"]
    assert ("Through the engine, int8 vs the fp32 bundle of the same checkpoint: entities F1 {:.4f} vs {:.4f} "
            "(at most 0.005 F1 may be lost).".format(*ent)) in card
    (out / CARD).write_text(card + "\nedited by hand\n")
    load_bundle(out, device="cpu", threads=1)  # the card is not hashed


def test_rebuild_command_names_the_int8_policy():
    from nere.engine.manifest import Manifest
    from nere.export.card import rebuild_command

    good = json.loads((Path(__file__).resolve().parents[1] / "artifacts" / "en-conll04-joint-int8" / "manifest.json")
                      .read_text())
    assert "--int8-policy auto" in good["made_by"]["command"]
    cmd = rebuild_command(Manifest(good))
    assert "--int8-policy head+ffn" in cmd and "auto" not in cmd
    good["made_by"]["command"] = "nere export ckpt --out b --precision int8"
    assert rebuild_command(Manifest(good)).endswith("--precision int8 --int8-policy head+ffn")


def test_evaluate_bundle_gives_what_verify_records(ner_bundles, tmp_path):
    """`nere evaluate BUNDLE` scores through the engine: the very figures --verify recorded."""
    from nere.cli import main as nere

    model, _, folder = ner_bundles["bert-crf"]
    tok = __import__("tokenizers").Tokenizer.from_file(str(folder / TOKENIZER))
    ckpt = save_checkpoint(model, tok, tmp_path / "ckpt", {})
    data = _write_jsonl_dataset(tmp_path / "data")
    out = tmp_path / "bundle"
    assert CliRunner().invoke(export, [str(ckpt), "--out", str(out), "--verify", str(data), "--quiet"]).exit_code == 0
    res = CliRunner().invoke(nere, ["evaluate", str(out), "--dataset", str(data), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    t = read_manifest_json(out)["metrics"]["test"]
    assert got["headline"] == t["headline"] and got["entities"] == t["engine"]["entities"]
    assert got["documents"] == t["engine"]["documents"] == len(_SENTS)


def test_evaluate_scores_a_tiny_bundle(tmp_path):
    """On the lookup bundles of fixtures_bundles: known entity and triple scores, and a
    one-line error for a bundle the engine cannot run alone."""
    from fixtures_bundles import make_bundle, scored_examples
    from nere.cli import main as nere
    from nere.train.datasets import write_jsonl

    (tmp_path / "data").mkdir()
    write_jsonl(scored_examples(), tmp_path / "data" / "test.jsonl")
    joint = make_bundle(tmp_path / "joint", task="joint")
    res = CliRunner().invoke(nere, ["evaluate", str(joint), "--dataset", str(tmp_path / "data"), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert got["entities"]["f1"] == 1.0 and got["triples"]["f1"] == 0.75
    assert got["headline"] == {"metric": "triples_f1", "value": 0.75, "through": "engine"}
    text = CliRunner().invoke(nere, ["evaluate", str(joint), "--dataset", str(tmp_path / "data")])
    assert text.exit_code == 0 and "triples:" in text.output
    re_only = make_bundle(tmp_path / "re", task="re")
    bad = CliRunner().invoke(nere, ["evaluate", str(re_only), "--dataset", str(tmp_path / "data")])
    assert bad.exit_code == 1 and "RE-only" in bad.output and "Traceback" not in bad.output
    ner = make_bundle(tmp_path / "ner", task="ner")
    pipe = CliRunner().invoke(nere, ["evaluate", str(ner), "--re-model", str(re_only), "--dataset",
                                     str(tmp_path / "data"), "--json"])
    assert pipe.exit_code == 0, pipe.output
    assert json.loads(pipe.output)["triples"] is not None
    rec = CliRunner().invoke(nere, ["evaluate", str(joint), "--dataset", str(tmp_path / "data"), "--record"])
    assert rec.exit_code == 0, rec.output
    rec = CliRunner().invoke(nere, ["evaluate", str(joint), "--dataset", str(tmp_path / "data"), "--record"])
    m = Manifest.read(joint)
    m.verify_files(joint)  # recording touches no hashed file
    (r,) = m.evaluations  # the same dataset and split again replaces, not appends
    assert r["dataset"] == str(tmp_path / "data") and r["split"] == "test" and r["triples"]["f1"] == 0.75
    assert "## Also measured through the engine" in (joint / "README.md").read_text()
