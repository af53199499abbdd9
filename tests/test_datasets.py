"""Dataset loaders: counts on the real data, offsets, and clear errors on bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nere.train.datasets import (
    DATASETS,
    DatasetNotFoundError,
    dataset_root,
    load_dataset,
    load_stats,
)
from nere.train.datasets import conll04

# ---------------------------------------------------------------- CoNLL04

CONLL04_COUNTS = {"train": (922, 3377, 1283), "dev": (231, 893, 343), "test": (288, 1079, 422)}


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_conll04_counts(split):
    examples = load_dataset("conll04", split)
    n_sent, n_ent, n_rel = CONLL04_COUNTS[split]
    assert len(examples) == n_sent
    assert sum(len(e.entities) for e in examples) == n_ent
    assert sum(len(e.relations) for e in examples) == n_rel
    assert load_stats("conll04", split)["invalid_tag_sequences"] == 0


def test_conll04_surfaces_match_tokens_and_spert_copy():
    """Entity surfaces equal the joined tokens, and head/tail follow start order: the
    SpERT-format copy of the same split (explicit entity token spans) must agree."""
    root = dataset_root("conll04")
    spert = json.loads((root.parent / "conll04_spert" / "conll04_dev.json").read_text())
    examples = load_dataset("conll04", "dev")
    for ex, rec in zip(examples, spert, strict=True):
        ex.validate()
        toks = rec["tokens"]
        assert ex.text == " ".join(toks)
        gold = [((" ".join(toks[e["start"]:e["end"]])), e["type"]) for e in rec["entities"]]
        mine = [(ex.text[e.start:e.end], e.label) for e in ex.entities]
        assert mine == gold  # both lists are in start order
        assert [(r.head, r.tail, r.label) for r in ex.relations] == [
            (r["head"], r["tail"], r["type"]) for r in rec["relations"]
        ]
        assert ex.entities == sorted(ex.entities)


# ---------------------------------------------------------------- MSRA

MSRA_COUNTS = {  # sentences, entities, sentences that start inside an entity (measured)
    "train": (45261, 67130, 6),
    "dev": (5028, 7314, 0),
    "test": (5000, 6457, 11),
}


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_msra_counts_and_split_policy(split):
    examples = load_dataset("msra", split)
    n_sent, n_ent, n_inside = MSRA_COUNTS[split]
    assert len(examples) == n_sent
    assert sum(len(e.entities) for e in examples) == n_ent
    assert load_stats("msra", split)["sentences_starting_inside_entity"] == n_inside
    assert {e.label for x in examples for e in x.entities} == {"PER", "LOC", "ORG"}
    for ex in examples[:500]:
        ex.validate()
        assert ex.relations == []
    if split == "dev":  # every 10th training-file sentence, in file order
        assert [e.id for e in examples[:2]] == ["msra/msra_train.txt/9", "msra/msra_train.txt/19"]
    if split == "train":
        assert "msra/msra_train.txt/9" not in {e.id for e in examples[:20]}


def test_msra_sentence_starting_inside_entity_is_decoded_leniently():
    """A sentence starting 'M-PER E-PER' keeps that fragment as a PER entity."""
    examples = load_dataset("msra", "test")
    ex = next(x for x in examples if x.text.startswith("万年迟浩田"))
    surfaces = [(ex.text[e.start:e.end], e.label) for e in ex.entities[:3]]
    assert surfaces == [("万年", "PER"), ("迟浩田", "PER"), ("任建新", "PER")]
    assert len(load_dataset("msra", "test", limit=3)) == 3


# ---------------------------------------------------------------- errors


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*conll04.*msra"):
        load_dataset("nope", "train")
    with pytest.raises(ValueError, match="unknown split"):
        load_dataset("conll04", "validation")


def test_missing_folder_names_folder_and_env_var(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError, match=f"{tmp_path / 'conll04'}.*NERE_DATASETS"):
        load_dataset("conll04", "dev", data_dir=str(tmp_path))
    monkeypatch.setenv("NERE_DATASETS", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="empty.*NERE_DATASETS"):
        dataset_root("conll04")


def test_env_var_and_data_dir_resolution(tmp_path, monkeypatch):
    (tmp_path / "conll04").mkdir()
    monkeypatch.setenv("NERE_DATASETS", str(tmp_path))
    assert dataset_root("conll04") == tmp_path / "conll04"
    assert dataset_root("conll04", str(tmp_path / "conll04")) == tmp_path / "conll04"
    assert "conll04" in DATASETS
