"""`nere bench --baseline hf-pipeline` on a tiny random BERT folder: the report's keys, the
ratios against the bundles, the child-process peak, the head's labels and calibration.
Skipped without torch and transformers. No test asserts a speed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("transformers")

from fixtures_bundles import make_bundle  # noqa: E402
from test_bench import write_corpus  # noqa: E402

from nere.bench.command import evaluate_targets  # noqa: E402
from nere.cli import main  # noqa: E402

WORDS = ["alice", "smith", "works", "for", "acme", "corp", "in", "paris", ".", "bob", "lives", "london", "city",
         "the", "globex", "inc", "is", "carol", "jones", "and", "nothing", "here"]


def tiny_encoder(folder: Path) -> Path:
    """A Hugging Face BERT folder (random weights, a word-level vocabulary) the pipeline can load."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {"encoder": tiny_encoder(root / "encoder"), "bundle": make_bundle(root / "ner", task="ner"),
            "corpus": write_corpus(root / "corpus.parquet", 20)}


def run_cli(args: list[str]):
    return CliRunner().invoke(main, ["bench", *args], catch_exceptions=False)


def test_hf_pipeline_baseline_report(setup, tmp_path):
    out = tmp_path / "report"
    res = run_cli(["--model", str(setup["bundle"]), "--corpus", str(setup["corpus"]), "--out", str(out),
                   "--baseline", "hf-pipeline", "--hf-encoder", str(setup["encoder"]), "--hf-batch-size", "4",
                   "--repeats", "2", "--batch-sizes", "3", "--latency-seconds", "0", "--threads", "1"])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "report.json").read_text())
    assert r["settings"]["baselines"] == ["hf-pipeline"] and r["settings"]["hf_batch_size"] == 4
    (b,) = r["baselines"]
    assert b["kind"] == "hf-pipeline" and b["task"] == "ner" and b["encoder"] == str(setup["encoder"])
    assert b["batch_size"] == 4 and b["threads"] == 1 and b["labels"][0] == "O"
    assert {"seconds", "documents_per_s", "seconds_all"} <= set(b["end_to_end"]) and len(b["end_to_end"]["seconds_all"]) == 2
    assert b["end_to_end"]["documents_per_s"] > 0 and b["outputs"]["relations"] is None
    assert b["latency"][0]["batch_size"] == 3
    # peak RSS of the pipeline in a child process of its own, as the bundle's
    assert b["memory"]["returncode"] == 0 and b["memory"]["peak_rss_mb"] > 0 and b["memory"]["documents"] == 20
    (v,) = b["versus"]
    assert v["model"] == r["models"][0]["name"] and len(v["documents_per_s_ratios"]) == 2
    assert v["documents_per_s_ratio"] > 0 and v["peak_rss_ratio"] == pytest.approx(
        r["models"][0]["memory"]["peak_rss_mb"] / b["memory"]["peak_rss_mb"], abs=1e-3)
    names = {t["name"] for t in r["targets"]}
    assert {"speedup_vs_hf_pipeline", "rss_vs_hf_pipeline"} <= names
    md = (out / "report.md").read_text()
    assert "HF pipeline (NER only)" in md and "Against the baselines" in md


def test_hf_encoder_needs_the_baseline_and_a_model_folder(setup, tmp_path):
    common = ["--model", str(setup["bundle"]), "--corpus", str(setup["corpus"]), "--out", str(tmp_path / "o")]
    res = CliRunner().invoke(main, ["bench", *common, "--hf-encoder", str(setup["encoder"])])
    assert res.exit_code != 0 and "--baseline hf-pipeline" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["bench", *common, "--baseline", "hf-pipeline", "--hf-encoder", str(tmp_path)])
    assert res.exit_code != 0 and "no config.json" in res.output


def test_head_labels_and_calibrated_outside_share(setup):
    from nere.bench.hf_pipeline import HFPipelineBaseline, head_labels

    assert head_labels(["B-PER", "O", "I-PER", "B-PER"]) == ["O", "B-PER", "I-PER"]
    texts = ["alice smith works for acme corp in paris .", "bob lives in london city .",
             "carol jones works for globex inc and lives in london ."] * 4
    base = HFPipelineBaseline(setup["encoder"], ["O", "B-PER", "I-PER", "B-ORG", "I-ORG"], 1, 4,
                              calibration_texts=texts, entity_share=0.25)
    assert base.model.config.id2label[0] == "O" and base.describe()["labels"] == base.labels
    found = base.extract(texts[:3])
    assert len(found) == 3 and all(isinstance(doc, list) for doc in found)
    # about a quarter of the calibration tokens are now tagged as entities
    import torch

    enc = base.tokenizer(texts, return_tensors="pt", padding=True, return_special_tokens_mask=True)
    keep = enc.pop("special_tokens_mask").eq(0) & enc["attention_mask"].bool()
    with torch.no_grad():
        tagged = base.model(**enc).logits.argmax(-1).ne(0)[keep].float().mean().item()
    assert 0.15 <= tagged <= 0.35


def test_targets_against_the_hf_pipeline():
    b = {"kind": "hf-pipeline", "name": "hf-pipeline:enc",
         "versus": [{"model": "m", "documents_per_s_ratio": 4.5, "documents_per_s_ratios": [4.4, 4.5, 4.6],
                     "peak_rss_ratio": 0.6}]}
    got = {t["name"]: t for t in evaluate_targets({"models": [], "baselines": [b]})}
    assert got["speedup_vs_hf_pipeline"]["passed"] is True and got["speedup_vs_hf_pipeline"]["value"] == 4.5
    assert got["rss_vs_hf_pipeline"]["passed"] is False and got["rss_vs_hf_pipeline"]["threshold"] == 0.5
