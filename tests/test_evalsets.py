"""The packaged evaluation sets (zh-judgments, en-news) and the span checks scored on them."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from nere.engine.core.checks import (
    boundary_kind,
    error_breakdown,
    is_punct_or_space,
    length_bucket,
    user_checks,
)
from nere.train.datasets import DatasetNotFoundError, load_dataset, load_stats
from nere.train.datasets.evalsets import EN_NEWS, EVAL_DIR, ZH_JUDGMENTS

ROOT = Path(__file__).resolve().parents[1]
SETS = {"zh-judgments": {"PER", "LOC", "ORG"}, "en-news": {"Peop", "Loc", "Org", "Other"}}
EN_RELATIONS = {"Kill", "Live_In", "Located_In", "OrgBased_In", "Work_For"}
# gold entities may end in a period only when it is part of an abbreviation
ABBREVIATION_ENDS = ("U.S.", "Calif.", "Tenn.", "La.", "Ore.", "Inc.", "Corp.", "Co.", "Jr.")


@pytest.mark.parametrize("name", sorted(SETS))
def test_every_gold_span_slices_its_text_exactly(name):
    """Each entity's stored surface equals its slice; labels are the bundle's; no overlaps."""
    path = EVAL_DIR / (ZH_JUDGMENTS if name == "zh-judgments" else EN_NEWS).file_name
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    examples = load_dataset(name, "test")
    assert len(lines) == len(examples) and len({ex.id for ex in examples}) == len(examples)
    for raw, ex in zip(lines, examples):
        ex.validate()
        assert [e["text"] for e in raw["entities"]] == [ex.text[e.start:e.end] for e in ex.entities]
        spans = sorted((e.start, e.end) for e in ex.entities)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), f"{ex.id}: overlapping gold"
        for e in ex.entities:
            surface = ex.text[e.start:e.end]
            assert e.label in SETS[name]
            assert "\n" not in surface and surface == surface.strip(), (ex.id, surface)
            assert not is_punct_or_space(surface[0]), (ex.id, surface)
            assert not is_punct_or_space(surface[-1]) or surface.endswith(ABBREVIATION_ENDS), (ex.id, surface)


def test_sizes_and_relations():
    zh, en = load_dataset("zh-judgments", "test"), load_dataset("en-news", "test")
    assert 6 <= len(zh) <= 8 and 150 <= sum(len(ex.entities) for ex in zh) <= 280
    assert 25 <= len(en) <= 40 and 100 <= sum(len(ex.entities) for ex in en) <= 150
    assert all(not ex.relations for ex in zh)
    for ex in en:
        for r in ex.relations:
            assert r.label in EN_RELATIONS and r.head != r.tail
            head, tail = ex.entities[r.head].label, ex.entities[r.tail].label
            assert (r.label, head) != ("Kill", "Loc") and tail in ({"Peop"} if r.label == "Kill" else {"Loc", "Org"})
    assert load_stats("en-news", "test")["entities"] == sum(len(ex.entities) for ex in en)


def test_judgments_have_what_users_run_into():
    """Headings on their own lines, names with inner full-width spaces, compound surnames."""
    docs = load_dataset("zh-judgments", "test")
    persons = {ex.text[e.start:e.end] for ex in docs for e in ex.entities if e.label == "PER"}
    assert {"魏\u3000铭", "欧阳\u3000静", "司马俊"} <= persons
    assert all(ex.text.split("\n")[1].replace(" ", "") in {"民事判决书", "刑事判决书"} for ex in docs)
    assert any("经审理查明" in ex.text for ex in docs)


def test_gold_passes_its_own_checks():
    for name in SETS:
        examples = load_dataset(name, "test")
        gold = [[(e.start, e.end, e.label) for e in ex.entities] for ex in examples]
        found = user_checks([ex.text for ex in examples], gold, gold)
        assert found.counts() == dict.fromkeys(found.counts(), 0)


def test_only_the_test_split_exists():
    with pytest.raises(DatasetNotFoundError, match="only the 'test' split"):
        load_dataset("zh-judgments", "train")
    assert len(load_dataset("en-news", "test", limit=3)) == 3


def test_files_are_declared_package_data():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = data["tool"]["setuptools"]["package-data"]["nere.train.datasets"]
    assert any(Path("eval/zh_judgments.jsonl").match(p) for p in patterns)
    assert sorted(p.name for p in EVAL_DIR.glob("*.jsonl")) == ["en_news.jsonl", "zh_judgments.jsonl"]


def test_user_checks_flag_what_users_report():
    text = "原告：郑国华，男。\n审判员　魏　铭\n二〇二三年\nAustin, Texas. Christine Lagarde."

    def at(surface: str, label: str, extra: int = 0, keep: int | None = None) -> tuple[int, int, str]:
        s = text.index(surface)
        return (s, s + (len(surface) if keep is None else keep) + extra, label)

    gold = [[at("郑国华", "PER"), at("魏　铭", "PER"), at("Austin", "LOC"), at("Texas", "LOC"),
             at("Christine Lagarde", "PER")]]
    comma = text.index(",")
    pred = [[at("郑国华", "PER", keep=1), at("魏　铭", "PER", extra=2), at("Austin", "LOC", extra=1),
             (comma, comma + 1, "LOC"), at("Christine Lagarde", "PER", extra=1), at("原告", "PER")]]
    found = user_checks([text], gold, pred)
    assert [f.surface for f in found.person_cut] == ["郑"]
    assert [f.surface for f in found.line_break] == ["魏\u3000铭\n二"]
    assert [f.surface for f in found.punct_only] == [","]
    assert [f.surface for f in found.punct_edged] == ["Austin,", "Christine Lagarde."]
    assert [f.surface for f in found.spurious_person] == ["原告"]
    assert found.predicted == 6 and found.gold_persons == 3
    with pytest.raises(ValueError):
        user_checks([text], gold, [])


def test_error_breakdown_sorts_errors():
    text = "abcdefghijklmnopqrstuvwxyz"
    gold = [[(0, 3, "PER"), (5, 7, "LOC"), (10, 12, "ORG"), (20, 22, "PER"), (14, 18, "LOC")]]
    pred = [[(0, 1, "PER"), (5, 7, "ORG"), (10, 12, "ORG"), (24, 25, "PER"), (13, 18, "LOC")]]
    out = error_breakdown([text], gold, pred)
    assert out.gold == {"correct": 1, "type": 1, "boundary": 2, "missed": 1}
    assert out.pred == {"correct": 1, "type": 1, "boundary": 2, "spurious": 1}
    assert out.boundary_kinds[("PER", "cut end (pred is a prefix)")] == 1
    assert out.type_confusions == {("LOC", "ORG"): 1}
    assert out.boundary_kinds[("LOC", "extends start")] == 1
    assert out.boundary_diffs[("PER", "cut end (pred is a prefix)", "|-bc")] == 1
    assert out.examples[("PER", "cut end (pred is a prefix)")] == [("abc", "a")]
    rows = out.f1_rows(out.by_label)
    assert rows["ORG"]["precision"] == 0.5 and rows["ORG"]["recall"] == 1.0
    assert out.by_length["2"]["n_gold"] == 3 and out.by_length["2"]["tp"] == 1


def test_boundary_kinds_and_buckets():
    g = (5, 10, "X")
    assert boundary_kind(g, (5, 8, "X")) == "cut end (pred is a prefix)"
    assert boundary_kind(g, (7, 10, "X")) == "cut start (pred is a suffix)"
    assert boundary_kind(g, (6, 9, "X")) == "inside gold"
    assert boundary_kind(g, (5, 12, "X")) == "extends end"
    assert boundary_kind(g, (3, 10, "X")) == "extends start"
    assert boundary_kind(g, (3, 12, "X")) == "extends both sides"
    assert boundary_kind(g, (8, 12, "X")) == "crossing"
    assert [length_bucket(n) for n in (1, 2, 3, 4, 5, 6, 7, 30)] == ["1", "2", "3", "4", "5-6", "5-6", "7+", "7+"]
    with pytest.raises(ValueError):
        length_bucket(0)


def test_evaluate_bundle_on_a_packaged_set(tmp_path):
    """`nere evaluate BUNDLE --dataset en-news` scores through the engine; dev is a one-line error."""
    from fixtures_bundles import make_bundle
    from nere.cli import main as nere

    joint = make_bundle(tmp_path / "joint", task="joint")
    res = CliRunner().invoke(nere, ["evaluate", str(joint), "--dataset", "en-news", "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert got["documents"] == len(load_dataset("en-news", "test")) and got["triples"] is not None
    bad = CliRunner().invoke(nere, ["evaluate", str(joint), "--dataset", "zh-judgments", "--split", "dev"])
    assert bad.exit_code == 1 and "only the 'test' split" in bad.output and "Traceback" not in bad.output


@pytest.mark.slow
@pytest.mark.parametrize("bundle,name", [("zh-msra-ner-bilstm-crf-int8", "zh-judgments"),
                                         ("en-conll04-joint-int8", "en-news")])
def test_shipped_bundles_run_on_their_set(bundle, name):
    import importlib.util

    spec = importlib.util.spec_from_file_location("eval_user_checks", ROOT / "scripts" / "eval_user_checks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    result = mod.run(str(ROOT / "artifacts" / bundle), name, threads=1)
    assert result["scores"]["entities"]["f1"] > 0.5
    table = mod.markdown(result)
    assert "person name cut short" in table and "entity crossing a line break" in table
