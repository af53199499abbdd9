"""Models with extra per-token inputs: shapes, a few training steps, checkpoints, and the
same feature rows on the training path and on an engine-style flat path."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nere.engine.core.features import N_CASE, scatter_rows  # noqa: E402
from nere.train.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from nere.train.datasets import load_dataset  # noqa: E402
from nere.feature_options import feature_request  # noqa: E402
from nere.train.features import collate_ner, ner_items  # noqa: E402
from nere.train.ner_task import build_ner, ner_batches, predict_ner  # noqa: E402
from nere.train.trainer import TrainConfig, fit  # noqa: E402
from fixtures_features import write_substring_lexicon  # noqa: E402

TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
TINY_LSTM = {"embedding_dim": 16, "hidden_size": 16, "dropout": 0.0}
SMALL = {"case_dim": 4, "bigram_dim": 8, "lexicon_dim": 6, "lexicon_k": 2}


@pytest.fixture(scope="module")
def msra():
    return load_dataset("msra", "train", limit=40)


@pytest.fixture(scope="module")
def conll():
    return sorted(load_dataset("conll04", "train"), key=lambda e: len(e.text))[100:120]


@pytest.fixture(scope="module")
def lexicon_file(tmp_path_factory, msra):
    """A small 'word freq' dictionary from a few sentences."""
    return write_substring_lexicon(tmp_path_factory.mktemp("lex"), [ex.text for ex in msra[:10]])


def build(kind, examples, **features):
    return build_ner(kind, examples, encoder="random", bert_size=TINY_BERT, lstm=TINY_LSTM, dropout=0.0,
                     vocab_min_freq=1, features=dict(SMALL, **features))


def test_bilstm_with_bigrams_and_lexicon_trains(msra, lexicon_file):
    model, _, feat, notes = build("bilstm-crf", msra, bigrams=True, lexicon=str(lexicon_file))
    assert model.feature_names == ["bigram_ids", "lexicon_ids", "lexicon_weights"]
    assert notes["features"]["lexicon_words"]["kept"] <= notes["features"]["lexicon_words"]["source"]
    assert model.encoder.fwd.input_size == 16 + 8 + 4 * 6
    make = ner_batches(model, feat, msra, 8)
    batch = make(__import__("random").Random(0))[0]
    b, t = batch["input_ids"].shape
    assert batch["bigram_ids"].shape == (b, t) and batch["lexicon_ids"].shape == (b, t, 4, 2)
    assert batch["lexicon_weights"].dtype == torch.float32
    assert (batch["bigram_ids"][batch["attention_mask"] == 0] == 0).all()
    assert batch["lexicon_ids"].max() < model.config["features"]["lexicon"]["size"]
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-2, head_lr=1e-2, warmup=0.0, progress=False, log_epochs=False)
    result = fit(model, make, lambda m: {"f1": 0.0}, "f1", cfg)
    assert np.isfinite(result["history"][-1]["loss"])


def test_bert_case_features_shapes(conll):
    model, _, feat, _ = build("bert-crf", conll, case=True)
    assert model.feature_names == ["case_ids"]
    assert model.classifier.in_features == TINY_BERT["hidden_size"] + SMALL["case_dim"]
    batch = collate_ner(ner_items(conll[:4], feat, model.tagset, model.input_features)[0], feat)
    assert batch["case_ids"].shape == batch["input_ids"].shape
    assert batch["case_ids"].max() < N_CASE and (batch["case_ids"][:, 0] == 0).all()  # [CLS] is padding class
    loss = model.loss(batch)
    loss.backward()
    assert model.head_features.case.weight.grad is not None


def test_missing_extra_inputs_fail_clearly(conll):
    model, _, feat, _ = build("bert-softmax", conll, case=True)
    ids = torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="extra inputs"):
        model(ids, ids)


def test_checkpoint_keeps_feature_data(tmp_path, msra, lexicon_file):
    model, tok, feat, _ = build("bilstm-crf", msra, bigrams=True, lexicon=str(lexicon_file), case=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    model.eval()
    before = predict_ner(model, feat, msra)
    save_checkpoint(model, tok, tmp_path / "ck", {})
    names = {p.name for p in (tmp_path / "ck").iterdir()}
    assert {"bigrams.npz", "lexicon.npz"} <= names
    config = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert config["features"]["bigrams"]["file"] == "bigrams.npz" and config["features"]["lexicon"]["k"] == 2
    loaded, feat2, _ = load_checkpoint(tmp_path / "ck")
    after = predict_ner(loaded, feat2, msra)
    assert before["pred_tags"] == after["pred_tags"]


def test_training_rows_equal_engine_style_flat_rows(msra, lexicon_file):
    """Training builds per-sentence items; the engine computes a unit's flat tokens at once
    and scatters them into batches: the padded inputs must agree."""
    model, _, feat, _ = build("bilstm-crf", msra, bigrams=True, lexicon=str(lexicon_file), case=True)
    sents = msra[5:17]
    train_batch = collate_ner(ner_items(sents, feat, model.tagset, model.input_features)[0], feat)
    texts = [ex.text for ex in sents]
    tokens = feat.tokenize_flat(texts)  # the engine's unit: one call for all texts
    flat = model.input_features.compute(texts, tokens.offsets, tokens.first)
    width = train_batch["input_ids"].shape[1]
    for name in model.feature_names:
        rows = scatter_rows(flat[name], tokens.first[:-1], tokens.lengths, feat.lead, width)
        assert np.array_equal(rows, train_batch[name].numpy()), name


def test_export_dummies_run(msra, lexicon_file):
    model, _, _, _ = build("bilstm-crf", msra, bigrams=True, lexicon=str(lexicon_file))
    assert model.feature_names == model.input_features.input_names  # what the engine will feed, in order
    (spec,) = model.export_graphs()
    assert spec.inputs == ["input_ids", "attention_mask", "bigram_ids", "lexicon_ids", "lexicon_weights"]
    model.eval()
    out = model(*spec.dummy)
    assert out.shape[:2] == spec.dummy[0].shape


def test_feature_request_from_cli_options():
    assert feature_request({"case_features": False, "bigrams": False, "lexicon": None}) is None
    req = feature_request({"bigrams": True, "lexicon": "jieba", "lexicon_k": 4})
    assert req["bigrams"] and req["lexicon"] == "jieba" and req["lexicon_k"] == 4
