"""Joint BERT-CRF + multitask RE: training, weights, evaluation sections, checkpoints, CLI."""
from __future__ import annotations

import json
import random

import pytest
import torch
from click.testing import CliRunner
from test_re import TINY_BERT, TINY_HEAD, toy_examples

from nere.train.checkpoint import load_checkpoint, save_checkpoint
from nere.train.datasets import write_jsonl
from nere.train.evaluators import evaluate_checkpoint
from nere.train.joint_task import build_joint, evaluate_joint, joint_batches, weights_label
from nere.train.trainer import TrainConfig, fit


def tiny_joint(examples, **kw):
    return build_joint(examples, encoder="random", dropout=0.0, head=dict(TINY_HEAD), bert_size=TINY_BERT, **kw)


def train_tiny(model, feat, exs, epochs: int = 15, patience: int = 4):
    """A few epochs at a high learning rate; stops once dev (= train) e2e F1 stops rising."""
    make = joint_batches(model, feat, exs, batch_size=2)
    cfg = TrainConfig(epochs=epochs, batch_size=2, lr=5e-3, head_lr=5e-3, warmup=0.0, patience=patience, progress=False)
    return fit(model, make, lambda m: evaluate_joint(m, feat, exs), "e2e_f1", cfg)


def test_joint_overfits_toy_sentences():
    torch.manual_seed(0)
    exs = toy_examples()
    model, _, feat, _ = tiny_joint(exs, weights={"ner": 1.0, "re": 5.0, "transe": 0.5})
    train_tiny(model, feat, exs)
    scores = evaluate_joint(model, feat, exs)
    assert scores["ner"]["f1"] >= 0.9, scores["ner"]
    assert scores["re"]["macro_f1"] >= 0.9, scores["re"]
    assert scores["e2e_f1"] >= 0.9, scores["e2e"]
    assert scores["weights"] == {"ner": 1.0, "re": 5.0, "transe": 0.5}


def test_learned_weights_move_and_are_reported(tmp_path):
    torch.manual_seed(0)
    exs = toy_examples()
    model, tok, feat, _ = tiny_joint(exs, learned_weights=True)
    assert model.log_vars.requires_grad
    train_tiny(model, feat, exs, epochs=3)
    weights = evaluate_joint(model, feat, exs)["weights"]
    assert set(weights) == {"ner", "re", "transe"}
    assert any(abs(w - 1.0) > 1e-3 for w in weights.values())  # learned, not the initial exp(0)
    assert weights["ner"] < weights["re"]  # the CRF's larger loss gets the smaller weight
    save_checkpoint(model, tok, tmp_path / "ckpt", {})
    assert evaluate_checkpoint(tmp_path / "ckpt", exs)["weights"] == pytest.approx(weights)


def test_learned_weights_loss_formula():
    torch.manual_seed(0)
    exs = toy_examples()
    model, _, feat, _ = tiny_joint(exs, learned_weights=True)
    batch = joint_batches(model, feat, exs, batch_size=8)(random.Random(0))[0]
    model.eval()
    with torch.no_grad():
        model.log_vars.copy_(torch.tensor([0.1, -0.2, 0.0]))
    loss = model.loss(batch).item()
    s = model.log_variances().tolist()
    expected = sum(torch.exp(torch.tensor(-si)).item() * model.last_losses[k] + si for k, si in zip(("ner", "re", "transe"), s))
    assert loss == pytest.approx(expected, rel=1e-5)
    assert model.task_weights()["ner"] == pytest.approx(torch.exp(torch.tensor(-s[0])).item())


def test_fixed_weights_scale_the_loss():
    torch.manual_seed(0)
    exs = toy_examples()
    model, _, feat, _ = tiny_joint(exs, weights={"ner": 1.0, "re": 1.0, "transe": 0.0})
    assert not model.log_vars.requires_grad
    batch = joint_batches(model, feat, exs, batch_size=8)(random.Random(0))[0]
    model.eval()
    base = model.loss(batch).item()
    parts = model.last_losses
    assert base == pytest.approx(parts["ner"] + parts["re"], rel=1e-5)
    model.fixed_weights = {"ner": 2.0, "re": 10.0, "transe": 0.0}
    assert model.loss(batch).item() == pytest.approx(2 * parts["ner"] + 10 * parts["re"], rel=1e-5)


def test_joint_checkpoint_round_trip_and_graphs(tmp_path):
    torch.manual_seed(0)
    exs = toy_examples()
    model, tok, feat, _ = tiny_joint(exs)
    model.eval()
    before = evaluate_joint(model, feat, exs)
    save_checkpoint(model, tok, tmp_path / "ckpt", {})
    loaded, feat2, config = load_checkpoint(tmp_path / "ckpt")
    assert config["task"] == "joint" and config["model"] == "bert-crf-multitask"
    after = evaluate_joint(loaded, feat2, exs)
    assert after["ner"]["f1"] == before["ner"]["f1"] and after["re"] == before["re"] and after["e2e"] == before["e2e"]
    stage1, stage2 = loaded.export_graphs()
    assert stage1.outputs == ["emissions", "hidden"] and stage2.outputs == ["logits"]
    assert loaded.crf_arrays() is not None


def test_weights_label():
    assert weights_label({"ner": 1, "re": 5, "transe": 0.5}) == "ner + 5*re + 0.5*transe"
    assert weights_label({"ner": 1, "re": 1, "transe": 0}) == "ner + re"
    assert weights_label({"learned": True}) == "learned"


def test_cli_train_joint(tmp_path):
    from nere.train_commands import train

    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev", "test"):
        write_jsonl(toy_examples(), data / f"{split}.jsonl")
    out = tmp_path / "ckpt"
    args = ["joint", "--dataset", str(data), "--out", str(out), "--epochs", "1", "--quiet", "--encoder", "random",
            "--learned-weights"]
    res = CliRunner().invoke(train, args)
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "joint" and m["weights"]["learned"] is True and set(m["weights"]["final"]) == {"ner", "re", "transe"}
    assert {"ner", "re", "e2e", "e2e_f1"} <= set(m["test"]) and {"command", "hardware", "seconds"} <= set(m)


def test_joint_case_features_train_round_trip_and_graphs(tmp_path):
    torch.manual_seed(0)
    exs = toy_examples()
    model, tok, feat, _ = tiny_joint(exs, case_features=True)
    assert model.feature_names == ["case_ids"]
    train_tiny(model, feat, exs, epochs=2)
    before = evaluate_joint(model, feat, exs)
    save_checkpoint(model, tok, tmp_path / "ckpt", {})
    loaded, feat2, config = load_checkpoint(tmp_path / "ckpt")
    assert config["features"]["case"]
    after = evaluate_joint(loaded, feat2, exs)
    assert after["ner"]["f1"] == before["ner"]["f1"] and after["e2e"] == before["e2e"]
    stage1, _ = loaded.export_graphs()
    assert stage1.inputs == ["input_ids", "attention_mask", "case_ids"] and len(stage1.dummy) == 3
    emissions, hidden = stage1.module(*stage1.dummy)
    assert emissions.shape[:2] == hidden.shape[:2]
    assert loaded.forward_stage1(*stage1.dummy[:2])[0] is None  # RE on given entities needs hidden only
