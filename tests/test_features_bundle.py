"""Bundles of models with extra per-token inputs (case classes, bigrams, SoftLexicon):
export writes the inputs, the data files and the ``features`` section; the engine computes
the same inputs as training and gives the same emissions and spans as PyTorch.

Models are tiny and trained for a few steps on a handful of sentences: this is about the
export and the engine, not accuracy.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from nere.engine import Engine  # noqa: E402
from nere.engine.bundle import load_bundle  # noqa: E402
from nere.engine.core.features import TokenFeatures  # noqa: E402
from nere.engine.core.types import Example  # noqa: E402
from nere.engine.errors import BundleError  # noqa: E402
from nere.engine.manifest import Manifest, feature_input_names, sha256_file  # noqa: E402
from nere.engine.pipeline import Pipeline, Unit  # noqa: E402
from nere.export.bundle import write_bundle  # noqa: E402
from nere.export.cli import export  # noqa: E402
from nere.export.variants import quantize_embedding_rows  # noqa: E402
from nere.export.verify import ner_parity, verify_bundle  # noqa: E402
from nere.train.checkpoint import TOKENIZER, load_checkpoint, save_checkpoint  # noqa: E402
from nere.train.datasets import load_dataset  # noqa: E402
from nere.train.features import collate_extras, ner_items  # noqa: E402
from nere.train.ner_task import build_ner, ner_batches, predict_ner  # noqa: E402
from nere.train.trainer import TrainConfig, fit  # noqa: E402
from fixtures_features import write_substring_lexicon  # noqa: E402

TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
TINY_LSTM = {"embedding_dim": 16, "hidden_size": 16, "dropout": 0.0}
SMALL = {"case_dim": 4, "bigram_dim": 8, "lexicon_dim": 6, "lexicon_k": 2}
# texts the engine must featurize exactly as training: ideographic spaces, characters no
# vocabulary or lexicon holds, a lone space, nothing at all
HOSTILE_ZH = ["张三\u3000在北京工作。", "\u3000\u3000北京", "😀𝕏龘 中国", " ", "", "北"]
HOSTILE_EN = ["Alice SMITH works for ACME\u3000Corp .", "iPhone 15 and the U.S.A. ??", "😀 Ωmega", "", "  x  "]


@pytest.fixture(scope="module")
def msra():
    return load_dataset("msra", "train", limit=24)


@pytest.fixture(scope="module")
def conll():
    return sorted(load_dataset("conll04", "train"), key=lambda e: len(e.text))[100:116]


@pytest.fixture(scope="module")
def lexicon_file(tmp_path_factory, msra):
    """A small 'word freq' dictionary from a few sentences."""
    return write_substring_lexicon(tmp_path_factory.mktemp("lex"), [ex.text for ex in msra[:8]])


def _train_and_save(kind: str, examples, folder: Path, **features) -> Path:
    torch.manual_seed(0)
    model, tok, feat, _ = build_ner(kind, examples, encoder="random", bert_size=TINY_BERT, lstm=TINY_LSTM,
                                    dropout=0.0, vocab_min_freq=1, features=dict(SMALL, **features))
    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-2, head_lr=1e-2, warmup=0.0, progress=False, log_epochs=False)
    fit(model, ner_batches(model, feat, examples, 8), lambda m: {"f1": 0.0}, "f1", cfg)
    with torch.no_grad():  # a few steps leave the model near uniform: make its choices sharp
        model.classifier.weight.mul_(20.0)
        if model.crf is not None:
            model.crf.transitions.normal_(0, 1.0)
    return save_checkpoint(model, tok, folder, {})


def _export(checkpoint: Path, out: Path, *args: str) -> Path:
    result = CliRunner().invoke(export, [str(checkpoint), "--out", str(out), "--quiet", *args])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, msra, conll, lexicon_file):
    """name -> (checkpoint folder, fp32 bundle folder, texts)."""
    root = tmp_path_factory.mktemp("features-bundles")
    lstm = _train_and_save("bilstm-crf", msra, root / "ck-lstm", bigrams=True, lexicon=str(lexicon_file))
    bert = _train_and_save("bert-softmax", conll, root / "ck-bert", case=True)
    return {
        "bilstm-crf": (lstm, _export(lstm, root / "b-lstm"), [ex.text for ex in msra] + HOSTILE_ZH),
        "bert-softmax": (bert, _export(bert, root / "b-bert"), [ex.text for ex in conll] + HOSTILE_EN),
    }


KINDS = ["bilstm-crf", "bert-softmax"]
INPUTS = {"bilstm-crf": ["bigram_ids", "lexicon_ids", "lexicon_weights"], "bert-softmax": ["case_ids"]}


@pytest.mark.parametrize("kind", KINDS)
def test_manifest_lists_inputs_and_data_files(kind, bundles):
    checkpoint, folder, _ = bundles[kind]
    m = Manifest.read(folder)
    config = json.loads((checkpoint / "config.json").read_text())
    assert m.features == config["features"] and m.feature_inputs == INPUTS[kind]
    inputs = {d["name"]: d for d in m.graphs["stage1"]["inputs"]}
    assert list(inputs) == ["input_ids", "attention_mask", *INPUTS[kind]]
    for name in INPUTS[kind]:
        d = inputs[name]
        assert d["dtype"] == ("float32" if name == "lexicon_weights" else "int64")
        assert d["shape"][:2] == ["batch", "seq"]
        if name.startswith("lexicon"):
            assert d["shape"][2:] == [4, SMALL["lexicon_k"]]
    data = [p["file"] for key in ("bigrams", "lexicon") if (p := m.features.get(key))]
    assert data == (["bigrams.npz", "lexicon.npz"] if kind == "bilstm-crf" else [])
    for name in data:  # the checkpoint's very bytes, hashed in the manifest
        assert (folder / name).read_bytes() == (checkpoint / name).read_bytes()
        assert m.files[name] == sha256_file(folder / name)
    bundle = load_bundle(folder, device="cpu", threads=1)
    assert bundle.features is not None and bundle.features.input_names == INPUTS[kind]
    assert feature_input_names(m.features) == TokenFeatures.load(config["features"], checkpoint).input_names


@pytest.mark.parametrize("kind", KINDS)
def test_parity_with_pytorch(kind, bundles):
    checkpoint, folder, texts = bundles[kind]
    model, feat, _ = load_checkpoint(checkpoint)
    # parity decodes each sentence alone: a text without tokens has nothing to compare
    examples = [Example(t, []) for t in texts if len(feat.tokenize([t])[0].ids)]
    result = verify_bundle(str(folder), model, feat, examples, batch_size=4, progress=False, threads=1)
    ner = result["ner"]
    assert ner["featurization_mismatch"] == 0  # same ids and same extra inputs on both sides
    assert ner["agreement"] == 1.0 and ner["differing_sentences"] == []
    assert ner["max_abs_logit_diff"] <= 1e-4
    assert ner["engine_agreement"] == 1.0  # the whole engine (sentences, batches, scatter) too
    # the model really reads its features: spans found at all, so agreement is not vacuous
    assert sum(len(s) for s in predict_ner(model, feat, examples)["spans"]) > 0


def _engine_batches(bundle, texts):
    pipe = Pipeline(bundle)
    prep = pipe.prepare(Unit(pa.array(list(range(len(texts)))), list(texts)))
    return pipe, prep


@pytest.mark.parametrize("kind", KINDS)
def test_engine_features_equal_training(kind, bundles):
    """Offsets, ids and every extra input row of the engine's stage-1 batches equal what
    training computes for the same sentence text, hostile texts included."""
    checkpoint, folder, texts = bundles[kind]
    model, feat, _ = load_checkpoint(checkpoint)
    bundle = load_bundle(folder, device="cpu", threads=1)
    pipe, prep = _engine_batches(bundle, texts)
    pieces = [prep.texts[d][s:e] for d, s, e in zip(prep.sent_doc, prep.sent_start, prep.sent_end)]
    items, _ = ner_items([Example(p, []) for p in pieces], feat, model.tagset, model.input_features)
    lead = feat.lead
    seen = 0
    for rows, batch in zip(prep.batches, prep.inputs):
        assert sorted(batch.extras) == sorted(INPUTS[kind])
        for r, row in enumerate(rows.tolist()):
            s, t0, n = int(prep.row_sent[row]), int(prep.row_tok0[row]), int(prep.row_n[row])
            item = items[s]
            a = int(prep.tokens.first[s])
            assert np.array_equal(prep.tokens.offsets[a + t0 : a + t0 + n], item.encoded.offsets[t0 : t0 + n])
            assert np.array_equal(batch.input_ids[r, lead : lead + n], item.encoded.ids[t0 : t0 + n])
            want = collate_extras([item], lead, batch.input_ids.shape[1])
            for name in INPUTS[kind]:
                got = batch.extras[name][r]
                assert got.dtype == want[name].numpy().dtype
                assert np.array_equal(got, want[name].numpy()[0]), (name, pieces[s])
            seen += 1
    assert seen == len([p for p in pieces if len(feat.tokenize([p])[0].ids)])
    # empty and blank documents give nothing and fail nothing
    entities, _ = Engine(bundle).extract(pa.table({"id": list(range(len(texts))), "text": texts}))
    assert set(entities.column("doc_id").to_pylist()) <= {i for i, t in enumerate(texts) if t.strip()}


def test_tampered_feature_data_refuses_to_load(bundles, tmp_path):
    _, folder, _ = bundles["bilstm-crf"]
    for name in ("lexicon.npz", "bigrams.npz"):
        bad = tmp_path / f"bad-{name}"
        shutil.copytree(folder, bad)
        raw = bytearray((bad / name).read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        (bad / name).write_bytes(bytes(raw))
        with pytest.raises(BundleError, match=f"{name}: sha256 mismatch") as err:
            load_bundle(bad, device="cpu")
        assert "\n" not in str(err.value)


def test_feature_data_of_the_wrong_size_refused(bundles, tmp_path):
    """A bigram table from another run, with the manifest rehashed: rows differ from the graph's."""
    _, folder, _ = bundles["bilstm-crf"]
    bad = tmp_path / "resized"
    shutil.copytree(folder, bad)
    np.savez_compressed(bad / "bigrams.npz", codes=np.arange(3, dtype=np.int64))
    m = json.loads((bad / "manifest.json").read_text())
    m["files"]["bigrams.npz"] = sha256_file(bad / "bigrams.npz")
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="embedding rows"):
        load_bundle(bad, device="cpu")


def test_manifest_rules_for_features(bundles):
    _, folder, _ = bundles["bilstm-crf"]
    base = json.loads((folder / "manifest.json").read_text())

    def bad(edit, match):
        m = json.loads(json.dumps(base))
        edit(m)
        with pytest.raises(BundleError, match=match):
            Manifest(m)

    bad(lambda m: m.pop("features"), "inputs the engine cannot fill")  # a graph input nobody computes
    bad(lambda m: m["files"].pop("lexicon.npz"), "features lexicon file is not listed")
    bad(lambda m: m["features"].update(case=True), r"does not take: \['case_ids'\]")
    bad(lambda m: m["features"]["lexicon"].update(k=0), "lexicon.k")
    bad(lambda m: m["features"]["bigrams"].update(size="9"), "bigrams.size")
    Manifest(base)


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_variants_keep_feature_inputs(precision, bundles, tmp_path):
    checkpoint, _, texts = bundles["bilstm-crf"]
    model, feat, config = load_checkpoint(checkpoint)
    out, manifest = write_bundle(model, config, checkpoint / TOKENIZER, tmp_path / precision, precision,
                                 checkpoint=checkpoint)
    assert manifest["features"] == config["features"] and "lexicon.npz" in manifest["files"]
    bundle = load_bundle(out, device="cpu", threads=1)
    examples = [Example(t, []) for t in texts if len(feat.tokenize([t])[0].ids)]
    result = ner_parity(bundle, model, feat, examples, batch_size=4, progress=False)
    assert result["featurization_mismatch"] == 0
    assert np.isfinite(result["max_abs_logit_diff"])
    if precision == "fp16":
        assert result["agreement"] >= 0.99
    # int8: the differences come from the quantized LSTMs of this barely trained model, not
    # the features (its feature tables are under the 1M values the int8 tables need; their
    # per-row quantization is checked below)


def test_int8_row_quantization_of_feature_tables(bundles, tmp_path):
    """The per-row int8 Gather quantization (applied to tables of 1M values and more, as
    real bigram and lexicon tables are) is right for the bigram (B, T) and lexicon
    (B, T, 4, k) lookups: each row dequantizes to within its own scale."""
    checkpoint, folder, texts = bundles["bilstm-crf"]
    model, feat, _ = load_checkpoint(checkpoint)
    g = onnx.load(str(folder / "ner.onnx"))
    inputs = {i.name for i in g.graph.input}
    tables = {"bigram_ids": None, "lexicon_ids": None}
    for node in g.graph.node:
        if node.op_type == "Gather" and node.input[1] in tables:
            tables[node.input[1]] = node.name
    assert all(tables.values()) and set(tables) <= inputs
    quantize_embedding_rows(g, list(tables.values()))
    onnx.checker.check_model(g)
    q = tmp_path / "q.onnx"
    onnx.save(g, str(q))
    bundle = load_bundle(folder, device="cpu", threads=1)
    pipe, prep = _engine_batches(bundle, texts)
    sess = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"])
    for batch in prep.inputs:
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, **batch.extras}
        got = sess.run(["emissions"], feeds)[0]
        want = bundle.stage1.session.run(["emissions"], feeds)[0]
        assert np.abs(got - want).max() < 0.5


def test_cli_export_verify_with_features(bundles, tmp_path):
    """`nere export CHECKPOINT --verify` on a model with features: parity passes and is recorded."""
    checkpoint, _, _ = bundles["bilstm-crf"]
    out = _export(checkpoint, tmp_path / "verified", "--verify", "msra", "--split", "dev", "--limit", "12",
                  "--threads", "1")
    m = Manifest.read(out)
    assert m.metrics["dev"]["passed"] and m.metrics["dev"]["featurization_mismatch"] == 0
    assert m.metrics["dev"]["engine_agreement"] == 1.0
    assert (out / "README.md").is_file()


def test_card_names_the_extra_inputs(bundles):
    _, folder, _ = bundles["bilstm-crf"]
    assert "bigram_ids, lexicon_ids, lexicon_weights" in (folder / "README.md").read_text()
