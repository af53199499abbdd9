"""Export of RE and joint checkpoints: two graphs, the re manifest section, relation parity
on gold-entity pairs, the dynamic pairs axis, int8, and stage 2 run without torch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from nere.engine.bundle import load_bundle
from nere.engine.manifest import Manifest, read_manifest_json
from nere.export.bundle import write_bundle
from nere.export.verify import verify_bundle
from nere.train.checkpoint import TOKENIZER
from test_export import TINY_BERT, TINY_LSTM, make_examples

re_task = pytest.importorskip("nere.train.re_task", reason="RE models not in this checkout")
joint_task = pytest.importorskip("nere.train.joint_task", reason="joint model not in this checkout")

RE_KINDS = ["bert-multitask", "bert-softmax", "bilstm", "bilstm-att", "acnn"]
KINDS = [("re", k) for k in RE_KINDS] + [("joint", "bert-crf-multitask")]


def tiny_model(task: str, kind: str):
    torch.manual_seed(0)
    if task == "re":
        model, tok, feat, _ = re_task.build_re(kind, make_examples(), encoder="random", max_length=64,
                                               bert_size=TINY_BERT, lstm=TINY_LSTM)
    else:
        model, tok, feat, _ = joint_task.build_joint(make_examples(), encoder="random", max_length=64, bert_size=TINY_BERT)
        with torch.no_grad():
            model.crf.transitions.normal_(0, 1.0)
    return model.eval(), tok, feat


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("re")
    out = {}
    for task, kind in KINDS:
        model, tok, feat = tiny_model(task, kind)
        tok.save(str(root / f"{kind}.tokenizer.json"))
        folder, _ = write_bundle(model, model.config, root / f"{kind}.tokenizer.json", root / f"{task}-{kind}")
        out[kind] = (model, feat, folder)
    return out


@pytest.mark.parametrize("task,kind", KINDS)
def test_two_stage_bundle_and_relation_parity(task, kind, bundles):
    model, feat, folder = bundles[kind]
    m = read_manifest_json(folder)
    Manifest(m)
    assert m["task"] == task and m["model"] == kind
    assert {"ner.onnx", "re.onnx", "tokenizer.json"} <= set(m["files"])
    r = m["re"]
    assert r["relation_labels"] == ["no_relation", "Live_In", "Located_In", "Work_For"]
    assert r["negative_label"] == "no_relation" and r["entity_labels"] == ["Loc", "Org", "Per"]
    assert sorted(map(tuple, r["type_pairs"])) == [("Org", "Loc"), ("Per", "Loc"), ("Per", "Org")]
    s1 = [o["name"] for o in m["graphs"]["stage1"]["outputs"]]
    assert s1 == (["emissions", "hidden"] if task == "joint" else ["hidden"])
    assert (m["ner"] is not None) == (task == "joint")
    s2 = m["graphs"]["stage2"]
    assert [i["name"] for i in s2["inputs"]][:4] == ["hidden", "pair_index", "head_mask", "tail_mask"]
    assert s2["outputs"][0]["shape"] == ["pairs", 4]

    res = verify_bundle(str(folder), model, feat, make_examples(), batch_size=4, progress=False, threads=1)
    rel = res["re"]
    assert rel["pairs"] == sum(len(ex.entities) * (len(ex.entities) - 1) for ex in make_examples())
    assert rel["agreement"] == 1.0 and rel["pair_agreement"] == 1.0
    assert rel["max_abs_logit_diff"] <= 1e-4 and rel["f1"] == rel["torch_f1"]
    if task == "joint":
        assert res["ner"]["agreement"] == 1.0 and res["ner"]["max_abs_logit_diff"] <= 1e-4
        # the headline: triples through the engine
        assert res["headline"] == {"metric": "triples_f1", "value": res["engine"]["triples"]["f1"], "through": "engine"}
    else:  # an RE-only bundle needs an NER bundle in the engine: relations on gold entities
        assert "engine" not in res
        assert res["headline"] == {"metric": "relation_macro_f1", "value": rel["f1"], "through": "gold entities"}
    # the PyTorch side matches the training code's own RE prediction
    out = re_task.predict_re(model, feat, make_examples(), batch_size=4)
    from nere.engine.core.metrics import relation_scores

    gold = [g for pairs in out["pairs"] for *_, g in pairs]
    pred = [p for labels in out["labels"] for p, _ in labels]
    assert rel["torch_f1"] == pytest.approx(relation_scores(gold, pred)["macro_f1"])


@pytest.mark.parametrize("kind", ["bert-multitask", "acnn"])
def test_dynamic_pairs_axis(kind, bundles):
    model, _, folder = bundles[kind]
    specs = {s.name: s for s in model.export_graphs()}
    s1 = ort.InferenceSession(str(folder / "ner.onnx"), providers=["CPUExecutionProvider"])
    s2 = ort.InferenceSession(str(folder / "re.onnx"), providers=["CPUExecutionProvider"])
    names2 = [i.name for i in s2.get_inputs()]
    rng = np.random.default_rng(1)
    vocab = model.config["encoder"].get("vocab_size") or model.config["encoder"]["hf_config"]["vocab_size"]
    for batch, width, pairs in [(1, 6, 1), (3, 17, 5), (2, 9, 0)]:
        ids = rng.integers(5, vocab, size=(batch, width))
        mask = np.ones_like(ids)
        hidden = s1.run(["hidden"], {"input_ids": ids, "attention_mask": mask})[0]
        rows = rng.integers(0, batch, size=pairs)
        head = np.zeros((pairs, width), np.float32)
        tail = np.zeros((pairs, width), np.float32)
        for p in range(pairs):
            head[p, 1:3] = 1
            tail[p, 4] = 1
        types = rng.integers(0, 3, size=pairs)
        feeds = {"hidden": hidden, "pair_index": rows, "head_mask": head, "tail_mask": tail,
                 "head_type": types, "tail_type": types[::-1].copy()}
        got = s2.run(["logits"], {k: feeds[k] for k in names2})[0]
        args = [torch.from_numpy(np.ascontiguousarray(feeds[k])) for k in specs["re"].inputs]
        with torch.no_grad():
            want = specs["re"].module(*args).numpy()
        assert got.shape == (pairs, 4)
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_int8_keeps_stage2_fp32(bundles, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, feat, folder = bundles["bert-multitask"]
    out, m = write_bundle(model, model.config, folder / TOKENIZER, tmp_path / "int8", precision="int8")
    s1_ops = {n.op_type for n in onnx.load(str(out / "ner.onnx")).graph.node}
    s2_ops = {n.op_type for n in onnx.load(str(out / "re.onnx")).graph.node}
    assert "MatMulInteger" in s1_ops and "MatMulInteger" not in s2_ops
    res = verify_bundle(str(out), model, feat, make_examples(), batch_size=4, progress=False, threads=1)
    assert res["re"]["max_abs_logit_diff"] < 0.1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8"]


_STAGE2_NO_TORCH = textwrap.dedent("""
    import importlib.abc, json, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this process")
            return None

    sys.meta_path.insert(0, Block())
    import numpy as np
    from nere.engine.bundle import load_bundle

    b = load_bundle(sys.argv[1], device="cpu", threads=1)
    feeds = {k: np.asarray(v, dtype=np.int64) for k, v in json.loads(sys.argv[2]).items()}
    emissions, hidden = b.stage1.session.run(["emissions", "hidden"], feeds)
    width = hidden.shape[1]
    head = np.zeros((2, width), np.float32); head[:, 1:3] = 1
    tail = np.zeros((2, width), np.float32); tail[:, 4] = 1
    feeds2 = {"hidden": hidden, "pair_index": np.array([0, 1]), "head_mask": head, "tail_mask": tail,
              "head_type": np.array([0, 2]), "tail_type": np.array([2, 1])}
    logits = b.stage2.session.run(["logits"], {k: feeds2[k] for k in b.stage2.inputs})[0]
    assert "torch" not in sys.modules
    print(json.dumps(logits.tolist()))
""")


def test_joint_bundle_runs_without_torch(bundles):
    model, feat, folder = bundles["bert-crf-multitask"]
    batch = feat.collate(feat.tokenize(["Bob works for Acme", "Paris ."]))
    ids, mask = batch.input_ids, batch.attention_mask
    width = ids.shape[1]
    proc = subprocess.run([sys.executable, "-c", _STAGE2_NO_TORCH, str(folder),
                           json.dumps({"input_ids": ids.tolist(), "attention_mask": mask.tolist()})],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = np.array(json.loads(proc.stdout))
    with torch.no_grad():
        _, hidden = model.forward_stage1(torch.from_numpy(ids), torch.from_numpy(mask))
        head = torch.zeros(2, width)
        head[:, 1:3] = 1
        tail = torch.zeros(2, width)
        tail[:, 4] = 1
        want = model.forward_stage2(hidden, torch.tensor([0, 1]), head, tail, torch.tensor([0, 2]), torch.tensor([2, 1]))
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
    load_bundle(folder, device="cpu", threads=1)
