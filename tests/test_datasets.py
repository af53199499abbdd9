"""Dataset loaders: counts on the real data, offsets, and clear errors on bad input.

Real-data tests carry ``@pytest.mark.datasets``: skipped when the folders are absent,
errors under ``NERE_REQUIRE_DATASETS=1`` (tests/conftest.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nere.train.datasets import (
    DATASETS,
    DatasetNotFoundError,
    DatasetFormatError,
    dataset_root,
    load_dataset,
    load_stats,
    read_jsonl,
    write_jsonl,
)
from nere.engine.core import Entity
from nere.engine.core.sentences import TITLES, _ends, _period_holds, sentence_spans
from nere.train.datasets import flat_entities

# ---------------------------------------------------------------- CoNLL04

CONLL04_COUNTS = {"train": (922, 3377, 1283), "dev": (231, 893, 343), "test": (288, 1079, 422)}


@pytest.mark.datasets("conll04")
@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_conll04_counts(split):
    examples = load_dataset("conll04", split)
    n_sent, n_ent, n_rel = CONLL04_COUNTS[split]
    assert len(examples) == n_sent
    assert sum(len(e.entities) for e in examples) == n_ent
    assert sum(len(e.relations) for e in examples) == n_rel
    assert load_stats("conll04", split)["invalid_tag_sequences"] == 0


@pytest.mark.datasets("conll04", "conll04_spert")
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


# ---------------------------------------------------------------- SanWen

SANWEN_COUNTS = {  # sentences, entities, relations kept, relations crossing sentences (measured)
    "train": (30087, 119000, 10941, 1582),
    "dev": (2830, 11635, 1092, 197),
    "test": (3972, 16419, 1374, 215),
}


@pytest.mark.datasets("sanwen")
@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_sanwen_counts(split):
    examples = load_dataset("sanwen", split)
    stats = load_stats("sanwen", split)
    n_sent, n_ent, n_rel, n_cross = SANWEN_COUNTS[split]
    assert len(examples) == n_sent == stats["sentences"]
    assert sum(len(e.entities) for e in examples) == n_ent
    assert sum(len(e.relations) for e in examples) == n_rel
    assert stats["relations_crossing_sentences"] == n_cross
    # every mention is accounted for: kept, or skipped for a counted reason
    assert stats["mentions"] == n_ent + sum(
        stats[k]
        for k in ("mentions_discontinuous", "mentions_mismatch", "mentions_merged_duplicate",
                  "mentions_crossing_sentences")
    )
    assert stats["malformed_records"] == 0
    # 8 Training documents have shifted offsets (PROVENANCE.md): dropped whole, nothing else
    assert stats["documents_dropped_misaligned"] == (8 if split == "train" else 0)
    assert stats["mentions"] + stats["mentions_in_dropped_documents"] == {
        "train": 124992, "dev": 11924, "test": 16811}[split]
    if split == "dev":
        for ex in examples:
            ex.validate()
            assert ex.entities == sorted(ex.entities)
            assert ex.text == ex.text.strip()


@pytest.mark.datasets("sanwen")
def test_sanwen_known_sentence():
    """Validation/988.txt: '最终我没有到达他的墓地。' holds 他 nested in 他的墓地 (Ownership)."""
    examples = load_dataset("chinese_literature", "dev")
    ex = next(x for x in examples if x.id.startswith("sanwen/Validation/988#") and "到达他的墓地" in x.text)
    spans = {(ex.text[e.start:e.end], e.label) for e in ex.entities}
    assert {("他", "Person"), ("他的墓地", "Location")} <= spans
    heads = {(ex.text[ex.entities[r.head].start:ex.entities[r.head].end],
              ex.text[ex.entities[r.tail].start:ex.entities[r.tail].end], r.label) for r in ex.relations}
    assert ("他", "他的墓地", "Ownership") in heads


def _write_brat(root: Path) -> None:
    folder = root / "chinese_literature_ner_re" / "relation_extraction" / "Validation"
    folder.mkdir(parents=True)
    text = "张三住在北京。他的朋\n友来了！” 她笑了\n"
    assert text[7:12] == "他的朋\n友" and text[17] == "她"
    ann = "\n".join([
        "T1\tPerson-Name 0 2\t张三",
        "T2\tLocation-Name 4 6\t北京",
        "T3\tPerson-Pronoun 7 8\t他",
        "T4\tPerson-Nominal 7 12\t他的朋",      # continuation line follows
        "友",
        "T5\tPerson-Pronoun 17 18\t她",
        "T6\tThing-Nominal 0 1;4 5\t张 北",     # discontinuous
        "T7\tLocation-Nominal 2 4\t北京",       # mismatch: text[2:4] is 住在
        "T8\tPerson-Name 0 2\t张三",            # same span + coarse label as T1: merged
        "R1\tLocated Arg1:T1 Arg2:T2\t",
        "R2\tSocial Arg1:T4 Arg2:T5\t",         # crosses a sentence boundary
        "R3\tFamily Arg1:T3 Arg2:T4\t",         # nested entities, kept
        "R4\tLocated Arg1:T7 Arg2:T2\t",        # its mention was skipped
        "R5\tLocated Arg1:T8 Arg2:T2\t",        # duplicate of R1 after merging
        "R6\tCoreference Arg1:T3 Arg2:T5\t",
        "*\tCoreference T3 T5",
        "#1\tAnnotatorNotes T1\tnote",
    ]) + "\n"
    (folder / "1.txt").write_text(text, encoding="utf-8", newline="")
    (folder / "1.ann").write_text(ann, encoding="utf-8", newline="")
    # a document whose offsets are all shifted by one: dropped whole
    (folder / "2.txt").write_text("甲乙丙丁戊己庚辛。", encoding="utf-8", newline="")
    shifted = [f"T{k + 1}\tThing-Nominal {k + 1} {k + 2}\t{ch}" for k, ch in enumerate("甲乙丙丁戊")]
    (folder / "2.ann").write_text("\n".join(shifted + ["R1\tNear Arg1:T1 Arg2:T2\t"]) + "\n", encoding="utf-8")


def test_sanwen_handmade_brat(tmp_path):
    _write_brat(tmp_path)
    examples = load_dataset("sanwen", "dev", data_dir=str(tmp_path))
    stats = load_stats("sanwen", "dev", data_dir=str(tmp_path))
    assert [e.text for e in examples] == ["张三住在北京。", "他的朋\n友来了！”", "她笑了"]
    s0, s1, s2 = examples
    assert s0.entities == [Entity(0, 2, "Person"), Entity(4, 6, "Location")]
    assert [(r.head, r.tail, r.label) for r in s0.relations] == [(0, 1, "Located")]
    assert s1.entities == [Entity(0, 1, "Person"), Entity(0, 5, "Person")]  # nested, kept
    assert [(r.head, r.tail, r.label) for r in s1.relations] == [(0, 1, "Family")]
    assert s2.entities == [Entity(0, 1, "Person")] and s2.relations == []
    for ex in examples:
        ex.validate()
    assert stats.counts == {
        "documents": 2, "characters": 30, "malformed_records": 0, "coreference_groups": 1,
        "documents_dropped_misaligned": 1, "mentions_in_dropped_documents": 5,
        "relations_in_dropped_documents": 1,
        "mentions": 8, "mentions_discontinuous": 1, "mentions_mismatch": 1,
        "mentions_merged_duplicate": 1, "relations": 6, "relations_coreference_skipped": 1,
        "relations_crossing_sentences": 1, "relations_mention_skipped": 1,
        "relations_duplicate": 1, "relations_kept": 2, "sentences": 3, "entities": 5,
        "sentences_with_overlapping_entities": 1,
    }


def test_sentence_spans_keep_closers_and_newlines():
    text = "他说：“走吧！”然后\n离开了。\n\n第二句?  "
    spans = sentence_spans(text)
    assert [text[s:e] for s, e in spans] == ["他说：“走吧！”", "然后\n离开了。", "第二句?"]
    semi = "甲；乙。"
    assert [semi[s:e] for s, e in sentence_spans(semi, semicolons=True)] == ["甲；", "乙。"]
    assert sentence_spans("甲；乙。") == [(0, 4)]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="甲乙 \n。！？!?；”）a", max_size=40), st.booleans())
def test_sentence_spans_partition_the_text(text, semicolons):
    """Ordered, disjoint, trimmed, and every non-space character lies in some sentence."""
    spans = sentence_spans(text, semicolons=semicolons)
    covered = set()
    for (s, e), nxt in zip(spans, spans[1:] + [(len(text), len(text))]):
        assert 0 <= s < e <= nxt[0]
        assert not text[s].isspace() and not text[e - 1].isspace()
        covered.update(range(s, e))
    assert all(ch.isspace() for i, ch in enumerate(text) if i not in covered)


def _holds_oracle(text: str, start: int, end: int) -> bool:
    """The period rule spelled out character by character: the last word within the 12
    characters before the '.' (cut at that edge) is an initial or a title, or the next
    non-space character after the run is lower case, a digit or one of , ; : )."""
    is_word = lambda c: c.isalnum() or c == "_"  # noqa: E731  (re's \w for str)
    j = start
    while j > max(0, start - 12) and not is_word(text[j - 1]):
        j -= 1
    i = j
    while i > max(0, start - 12) and is_word(text[i - 1]):
        i -= 1
    word = text[i:j]
    if word and ((len(word) == 1 and word.isalpha()) or word.lower() in TITLES):
        return True
    rest = text[end:].lstrip()
    return bool(rest) and (rest[0].islower() or rest[0].isdigit() or rest[0] in ",;:)")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["Mr", "dec", "U", "S", "x", "Jo", "é", "_", "3", " ", "  ", "\n", ".", "..", "!",
                                 "?", "”", ")", ",", ";", '"', "A", "word", "Calif", "No"]), max_size=30).map("".join))
@example("Mr. Smith")
@example("On Dec. A. Jo. Word")
@example("ok Calif.  No. 5 x_. Y")
def test_period_rule_matches_its_plain_statement(text):
    for m in _ends(False, True).finditer(text):
        if text[m.start()] == ".":
            assert _period_holds(text, m.start(), m.group(2), text[::-1]) == _holds_oracle(text, m.start(), m.end(1))


def _spans_oracle(text: str, semicolons: bool, periods: bool) -> list[tuple[int, int]]:
    """The sentence rule spelled out character by character (see engine/core/sentences.py):
    a run of end marks (then closers, and '.' when ``periods``) ends a sentence; a run led by '.' (then end
    marks, closers, '.' and ASCII quotes) does when whitespace or the end follows it and
    the period rule does not hold it; a '.' run that fails leaves the scan at the next
    character. Spans are trimmed and empty ones dropped."""
    enders = set("。！？!?") | (set("；;") if semicolons else set())
    closers = set("”’」』）)】》")
    cuts, i, n = [], 0, len(text)
    while i < n:
        if text[i] in enders:
            j = i + 1
            while j < n and (text[j] in enders or text[j] in closers or (periods and text[j] == ".")):
                j += 1
            cuts.append(j)
            i = j
        elif periods and text[i] == ".":
            j = i + 1
            while j < n and (text[j] in enders or text[j] in closers or text[j] in ".\"'"):
                j += 1
            if j == n or text[j].isspace():
                if not _holds_oracle(text, i, j):
                    cuts.append(j)
                i = j
            else:
                i += 1
        else:
            i += 1
    out, start = [], 0
    for end in cuts + [n]:
        piece = text[start:end]
        s = start + len(piece) - len(piece.lstrip())
        e = start + len(piece.rstrip())
        if s < e:
            out.append((s, e))
        start = end
    return out


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(["甲", "乙", "Mr", "U", "x", "A", "é", "3", " ", "\n", "\t", ".", "..", "!", "?", "。",
                                 "！", "？", "；", ";", "”", "’", "」", "）", ")", "》", '"', "'", ",", "No"]),
                max_size=30).map("".join), st.booleans(), st.booleans())
@example("  Mr. Smith left.  He came back!  ", False, True)
@example("他说：“走吧！”然后\n离开了。\n\n第二句?  ", False, False)
@example("a .!x. B", False, True)
def test_sentence_spans_match_their_plain_statement(text, semicolons, periods):
    assert sentence_spans(text, semicolons, periods) == _spans_oracle(text, semicolons, periods)


def test_flat_entities_longest_then_earliest():
    ents = [Entity(0, 1, "P"), Entity(0, 4, "L"), Entity(3, 6, "T"), Entity(5, 8, "X"), Entity(9, 10, "Y")]
    kept, dropped = flat_entities(ents)
    # 0-4 (len 4) beats 0-1 and 3-6; 3-6 and 5-8 tie on length: 5-8 survives since 3-6 overlaps 0-4
    assert kept == [Entity(0, 4, "L"), Entity(5, 8, "X"), Entity(9, 10, "Y")]
    assert dropped == 2
    kept, dropped = flat_entities([Entity(2, 4, "B"), Entity(0, 2, "A"), Entity(1, 3, "C")])
    assert kept == [Entity(0, 2, "A"), Entity(2, 4, "B")] and dropped == 1


# ---------------------------------------------------------------- JSONL


@pytest.mark.datasets("conll04", "sanwen")
def test_jsonl_round_trip_file_and_folder(tmp_path):
    examples = load_dataset("conll04", "dev", limit=20) + load_dataset("sanwen", "dev", limit=20)
    examples[0].id = None  # ids are optional
    assert write_jsonl(examples, tmp_path / "data" / "dev.jsonl") == 40
    back = load_dataset(str(tmp_path / "data" / "dev.jsonl"), "train")  # a file is used as given
    assert back == examples
    assert load_dataset(str(tmp_path / "data"), "dev", limit=3) == examples[:3]
    with pytest.raises(DatasetNotFoundError, match="test.jsonl"):
        load_dataset(str(tmp_path / "data"), "test")
    with pytest.raises(DatasetNotFoundError, match="missing.jsonl"):
        load_dataset(str(tmp_path / "missing.jsonl"), "dev")


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"text": "abc", ', "bad JSON"),
        ('["abc"]', "must be a JSON object"),
        ('{"txt": "abc"}', "unknown key 'txt'"),
        ('{"entities": []}', "lacks 'text'"),
        ('{"text": "abc", "entities": [{"start": 1, "end": 5, "label": "X"}]}', r"span \[1, 5\) outside"),
        ('{"text": "abc", "entities": [{"start": 2, "end": 2, "label": "X"}]}', "or empty"),
        ('{"text": "abc", "entities": [{"start": "0", "end": 1, "label": "X"}]}', "must be integers"),
        ('{"text": "abc", "entities": [{"start": 0, "end": 1, "label": "X", "text": "b"}]}', "!= text"),
        ('{"text": "abc", "entities": [{"start": 0, "end": 1, "label": "X"}], '
         '"relations": [{"head": 0, "tail": 1, "label": "R"}]}', "tail 1 out of range"),
        ('{"text": "abc", "relations": [{"head": 0, "label": "R"}]}', "lacks 'tail'"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DatasetFormatError, match=f"bad.jsonl:3: .*{problem}") as info:
        read_jsonl(path)
    assert "\n" not in str(info.value)
    assert len(read_jsonl(path, limit=1)) == 1  # stops before the bad line


def test_jsonl_not_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"text": "ok"}\n{"text": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(DatasetFormatError, match="latin1.jsonl:2: not UTF-8"):
        read_jsonl(path)


# ---------------------------------------------------------------- errors


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*conll04.*msra"):
        load_dataset("nope", "train")
    with pytest.raises(ValueError, match="unknown split"):
        load_dataset("conll04", "validation")
    with pytest.raises(ValueError, match="limit"):
        load_dataset("conll04", "dev", limit=-1)


def test_missing_folder_names_folder_and_env_var(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError, match=f"{tmp_path / 'conll04'}.*NERE_DATASETS"):
        load_dataset("conll04", "dev", data_dir=str(tmp_path))
    monkeypatch.setenv("NERE_DATASETS", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="empty.*NERE_DATASETS"):
        dataset_root("conll04")


def test_env_var_and_data_dir_resolution(tmp_path, monkeypatch):
    (tmp_path / "conll04").mkdir()
    (tmp_path / "chinese_literature_ner_re").mkdir()
    with pytest.raises(DatasetNotFoundError, match="conll04_dev.json"):
        load_dataset("conll04", "dev", data_dir=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="Testing"):
        load_dataset("sanwen", "test", data_dir=str(tmp_path))
    monkeypatch.setenv("NERE_DATASETS", str(tmp_path))
    assert dataset_root("conll04") == tmp_path / "conll04"
    assert dataset_root("conll04", str(tmp_path / "conll04")) == tmp_path / "conll04"
    assert "conll04" in DATASETS


@pytest.mark.parametrize("required,outcome", [("", "SKIPPED [1]"), ("1", "ERROR ")])
def test_absent_datasets_skip_unless_required(tmp_path, required, outcome):
    """Without the datasets folder a real-data test is skipped with the reason; CI's
    NERE_REQUIRE_DATASETS=1 turns the same absence into an error."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NERE_DATASETS=str(tmp_path), NERE_REQUIRE_DATASETS=required)
    test = f"{__file__}::test_conll04_surfaces_match_tokens_and_spert_copy"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-rsE", "-p", "no:cacheprovider", test], env=env,
                          capture_output=True, text=True, cwd=Path(__file__).parent, timeout=300)
    assert outcome in proc.stdout, proc.stdout[-2000:]
    assert str(tmp_path / "conll04") in proc.stdout  # the reason names the folder looked for
    assert proc.returncode == (1 if required else 0)
