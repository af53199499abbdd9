"""`nere study`: the plan, run selection, a tiny resumable study, tables and records."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_re import toy_examples

from nere.train.datasets import write_jsonl
from nere.study_command import study
from nere.train.study import merge_records, plan, select


def test_plan_is_the_nere_comparison():
    runs = plan("conll04")
    assert len({r.name for r in runs}) == len(runs)
    assert [r.model for r in runs if r.task == "ner"] == ["bilstm", "bilstm-crf", "bert-softmax", "bert-crf"]
    assert [r.model for r in runs if r.task == "re"] == ["bert-multitask", "bert-softmax", "bilstm", "bilstm-att", "acnn"]
    joint = [r.name for r in runs if r.task == "joint"]
    assert joint == [f"conll04-joint-{w}" for w in ("1+1", "1+5", "1+10", "5+1", "1+8", "1+15", "learned")]
    assert "--learned-weights" in runs[-1].args
    assert [r.name for r in plan("data/my.jsonl")][0] == "my-ner-bilstm"


def test_select():
    runs = plan("conll04")
    assert {r.task for r in select(runs, ["re"])} == {"re"} and len(select(runs, ["re"])) == 5
    assert [r.name for r in select(runs, ["re-acnn,joint-learned"])] == ["conll04-re-acnn", "conll04-joint-learned"]
    assert len(select(runs, ["conll04-joint-1+*"])) == 5
    with pytest.raises(ValueError, match="nope"):
        select(runs, ["nope"])


def test_merge_records_replaces_same_key_only(tmp_path):
    path = tmp_path / "results.json"
    other = {"task": "ner", "dataset": "msra", "model": "bert-crf", "metrics": {"f1": 0.9}}
    old = {"task": "re", "dataset": "conll04", "model": "acnn", "metrics": {"f1": 0.1}}
    exported = dict(old, kind="export", precision="int8")  # another kind of record of the same model
    path.write_text(json.dumps([other, old, exported, {"note": "free-form entries survive"}]))
    new = dict(old, metrics={"f1": 0.5})
    joint = {"task": "joint", "dataset": "conll04", "model": "j", "weights": {"ner": 1, "re": 5}, "metrics": {}}
    merge_records(path, [new, joint])
    merge_records(path, [dict(joint, metrics={"f1": 1.0})])
    got = json.loads(path.read_text())
    assert got[0] == other and {"note": "free-form entries survive"} in got and exported in got
    assert [r["metrics"] for r in got if r.get("model") == "acnn" and "kind" not in r] == [{"f1": 0.5}]
    assert [r["metrics"] for r in got if r.get("model") == "j"] == [{"f1": 1.0}]


@pytest.mark.slow
def test_tiny_study_runs_resumes_and_tabulates(tmp_path):
    data = tmp_path / "toy"
    data.mkdir()
    for split in ("train", "dev", "test"):
        write_jsonl(toy_examples(), data / f"{split}.jsonl")
    out = tmp_path / "study"
    args = ["--dataset", str(data), "--out", str(out), "--only", "ner-bilstm,re-bilstm", "--epochs", "1",
            "--record", str(tmp_path / "records.json"), "--threads", "1"]
    res = CliRunner().invoke(study, args)
    assert res.exit_code == 0, res.output
    for name in ("toy-ner-bilstm", "toy-re-bilstm"):
        assert (out / name / "metrics.json").is_file() and (out / name / "model.safetensors").is_file()
    records = json.loads((out / "results.json").read_text())
    assert [(r["task"], r["model"]) for r in records] == [("ner", "bilstm"), ("re", "bilstm")]
    for r in records:
        assert r["split"] == "test" and r["precision"] == "fp32" and r["dataset"] == str(data)
        assert {"accuracy", "precision", "recall", "f1"} <= set(r["metrics"])
        assert r["command"].startswith("nere train ") and r["hardware"] and r["seconds"] > 0
    assert "macro_f1" in records[1]["metrics"]
    assert json.loads((tmp_path / "records.json").read_text()) == records
    md = (out / "tables.md").read_text()
    assert "## NER" in md and "## RE" in md and "## Joint" in md
    row = next(line for line in md.splitlines() if line.startswith("|bilstm|") and "micro" not in line)
    assert "-" not in row.split("|")[2]  # a number, not the '-' of a missing run
    assert "|bert-crf|-|-|-|-|" in md  # planned but not run
    stamp = (out / "toy-re-bilstm" / "metrics.json").stat().st_mtime_ns
    res = CliRunner().invoke(study, args)
    assert res.exit_code == 0 and res.output.count("skipped") == 2
    assert (out / "toy-re-bilstm" / "metrics.json").stat().st_mtime_ns == stamp
