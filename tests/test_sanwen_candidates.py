"""RE candidate sets: every ordered pair (``all``) vs the gold-relation pairs (``annotated``)."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

from nere.engine.core.types import NO_RELATION
from nere.train.datasets import write_jsonl
from nere.train.re_features import (
    candidates_of,
    pair_sentences,
    predicted_label_ids,
    sample_pairs,
    select_candidates,
)
from nere.train.re_task import evaluate_re, predict_re, re_batches
from tests.test_re import char_featurizer, make_example, tiny_re, toy_examples


def three_entity_example():
    return make_example("Ann met Bob at Acme .", [("Ann", "Peop"), ("Bob", "Peop"), ("Acme", "Org")],
                        [(0, 2, "Work_For"), (2, 1, "Employs")])


def test_candidate_counts_all_vs_annotated():
    ex = three_entity_example()
    feat = char_featurizer([ex.text])
    labels = [NO_RELATION, "Employs", "Work_For"]
    (every,), s_all = pair_sentences([ex], feat, labels, ["Org", "Peop"])
    (gold,), s_ann = pair_sentences([ex], feat, labels, ["Org", "Peop"], candidates="annotated")
    assert len(every.pairs) == 6 and s_all.pairs == 6 and s_all.positive == 2
    assert sorted(gold.pairs) == [(0, 2, "Work_For"), (2, 1, "Employs")]
    assert s_ann.pairs == s_ann.positive == 2 and gold.usable == [0, 1]
    assert [labels[i] for i in gold.label_ids] == [lab for *_, lab in gold.pairs]
    # sampling never invents negatives, whatever the ratio
    assert sample_pairs(gold, 3.0, random.Random(0)) == [0, 1]


def test_sentence_without_relations_has_no_annotated_candidates():
    ex = make_example("Ann met Bob .", [("Ann", "Peop"), ("Bob", "Peop")], [])
    feat = char_featurizer([ex.text])
    (sent,), stats = pair_sentences([ex], feat, [NO_RELATION, "Kill"], ["Peop"], candidates="annotated")
    assert sent.pairs == [] and stats.pairs == 0


def test_select_candidates_and_unknown_set():
    pairs = [(0, 1, "A"), (1, 0, NO_RELATION), (0, 2, "B")]
    assert select_candidates(pairs, "all") == pairs
    assert select_candidates(pairs, "annotated") == [(0, 1, "A"), (0, 2, "B")]
    with pytest.raises(ValueError, match="candidate set"):
        select_candidates(pairs, "gold")


def test_annotated_prediction_never_picks_no_relation():
    probs = np.array([[0.9, 0.04, 0.06], [0.1, 0.7, 0.2]])
    assert predicted_label_ids(probs, "all").tolist() == [0, 1]
    assert predicted_label_ids(probs, "annotated").tolist() == [2, 1]


def test_annotated_training_and_metric_cover_only_gold_pairs():
    exs = toy_examples()
    model, _, feat, _ = tiny_re("bilstm", exs)
    assert candidates_of(model) == "all"
    gold_pairs = sum(len(ex.relations) for ex in exs)
    model.config["candidates"] = "annotated"
    make = re_batches(model, feat, exs, batch_size=4, neg_ratio=-1)
    assert make.stats["pairs"] == make.stats["positive"] == gold_pairs
    labels = [int(x) for b in make(random.Random(0)) for x in b["labels"]]
    assert len(labels) == gold_pairs and 0 not in labels  # no no_relation target
    out = predict_re(model, feat, exs)
    assert sum(len(p) for p in out["pairs"]) == gold_pairs
    assert all(lab != NO_RELATION for sent in out["labels"] for lab, _ in sent)
    scores = evaluate_re(model, feat, exs)
    assert scores["pairs"] == gold_pairs and scores["candidates"] == "annotated"
    # macro over the relation labels present: every gold label is scored, none dropped
    assert set(scores["per_label"]) >= {r.label for ex in exs for r in ex.relations}
    assert NO_RELATION not in scores["per_label"]
    # end to end (given entities) still uses every pair: annotated pairs would leak gold
    e2e = predict_re(model, feat, exs, entities=[ex.entities for ex in exs])
    assert sum(len(p) for p in e2e["pairs"]) == sum(len(ex.entities) * (len(ex.entities) - 1) for ex in exs)


def test_cli_candidates_option_is_recorded_and_reused(tmp_path):
    from nere.train.checkpoint import load_checkpoint
    from nere.train_commands import train

    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev", "test"):
        write_jsonl(toy_examples(), data / f"{split}.jsonl")
    out = tmp_path / "ckpt"
    res = CliRunner().invoke(train, ["re", "--model", "bilstm", "--dataset", str(data), "--out", str(out),
                                     "--epochs", "1", "--quiet", "--candidates", "annotated"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    gold_pairs = sum(len(ex.relations) for ex in toy_examples())
    assert metrics["candidates"] == "annotated" and metrics["test"]["pairs"] == gold_pairs
    assert metrics["train_featurization"]["pairs"] == gold_pairs
    model, feat, config = load_checkpoint(out)
    assert config["candidates"] == "annotated" and evaluate_re(model, feat, toy_examples())["pairs"] == gold_pairs
    res = CliRunner().invoke(train, ["re", "--model", "bilstm", "--dataset", str(data), "--out", str(out),
                                     "--candidates", "gold"])
    assert res.exit_code != 0 and "Traceback" not in res.output


def test_study_plans_annotated_re_runs_with_their_own_names_and_records(tmp_path):
    from nere.train.study import merge_records, plan, report_plan, tables

    runs = [r for r in plan("sanwen", "annotated") if r.task == "re"]
    assert [r.name for r in runs] == [f"sanwen-re-annotated-{k}" for k in
                                      ("bert-multitask", "bert-softmax", "bilstm", "bilstm-att", "acnn")]
    assert all(r.args[:2] == ["--candidates", "annotated"] for r in runs)
    assert [r.name for r in plan("sanwen") if r.task == "re"][0] == "sanwen-re-bert-multitask"
    every = report_plan("sanwen")
    assert len({r.name for r in every}) == len(every) == len(plan("sanwen")) + 5
    rec = {"task": "re", "dataset": "sanwen", "model": "acnn", "metrics": {"f1": 0.1}}
    ann = dict(rec, candidates="annotated", metrics={"f1": 0.6})
    path = tmp_path / "results.json"
    merge_records(path, [rec])
    merge_records(path, [ann])  # another candidate set: kept beside, not replacing
    assert len(json.loads(path.read_text())) == 2
    md = tables([dict(ann, _name="sanwen-re-annotated-acnn")], every, "sanwen")
    assert "annotated pairs only" in md and "|acnn|-|-|-|0.6000|" in md
