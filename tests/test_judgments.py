"""Chinese court judgments through the shipped MSRA bundle: document lines, Unicode spaces.

Judgments are laid out in lines (court and title headings, a party list, a signature
block whose names are spaced with U+3000). By default a line break ends a sentence, so
no entity runs from one line into the next, and every entity's offsets slice the input.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path

import pyarrow as pa
import pytest

from nere.engine.api import Engine
from nere.engine.bundle import load_bundle
from nere.engine.pipeline import Pipeline, Unit

BUNDLE = Path(__file__).resolve().parents[1] / "artifacts" / "zh-msra-ner-bilstm-crf-int8"

JUDGMENT = """北京市海淀区人民法院
民事判决书
（2020）京0108民初12345号
原告：张某某，男，1945年出生，住北京市海淀区。
被告：北京某某科技有限公司，住所地北京市朝阳区。
　　原告张某某与被告北京某某科技有限公司合同纠纷一案，本院于2020年5月1日立案后，依法适用简易程序，公开开庭进行了审理。
审判员　魏　铭
二〇二〇年六月一日
书记员　李　明
"""


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load(BUNDLE, device="cpu", threads=1)


def _entities(engine: Engine, texts: list[str]) -> list[dict]:
    entities, _ = engine.extract(pa.table({"id": list(range(len(texts))), "text": texts}))
    return entities.to_pylist()


def _check_exact(text: str, rows: list[dict]) -> None:
    """Offsets slice the text; no entity crosses a line break, starts or ends with a
    space, or is punctuation only."""
    for r in rows:
        piece = text[r["start"]:r["end"]]
        assert r["text"] == piece
        assert "\n" not in piece and "\r" not in piece
        assert not piece[0].isspace() and not piece[-1].isspace()
        assert any(not unicodedata.category(c).startswith("P") for c in piece)


def test_judgment_lines_keep_their_entities_apart(engine):
    rows = _entities(engine, [JUDGMENT])
    _check_exact(JUDGMENT, rows)
    got = {(r["text"], r["label"]) for r in rows}
    assert ("北京市海淀区人民法院", "ORG") in got  # the heading, not run into the next line
    wei = JUDGMENT.index("魏")
    assert ("魏\u3000铭", "PER") in got  # a name written with spacing: one entity, inner space kept
    assert any(r["start"] == wei and r["end"] == wei + 3 for r in rows)
    assert ("李\u3000明", "PER") in got
    lines = [0] + [k + 1 for k, c in enumerate(JUDGMENT) if c == "\n"]
    sentence_of_line = {}
    for r in rows:  # every entity lies within one line, and each line is its own sentence
        line = max(k for k, s in enumerate(lines) if s <= r["start"])
        assert r["end"] <= lines[line + 1] - 1
        assert sentence_of_line.setdefault(line, r["sentence_index"]) == r["sentence_index"]


@pytest.mark.parametrize("space", ["\u3000", "\u00a0", "\u2002", "\u2003", "\u2009", "\u200a", "\u202f", "\u205f", "\t", " "])
def test_any_unicode_space_maps_back_exactly(engine, space):
    """The tokenizer drops every Unicode space, so the model sees the same characters
    whichever space a document uses, and offsets still point into the text as written."""
    text = f"审判员{space}魏{space}铭\n{space}{space}书记员{space}李{space}明"
    rows = _entities(engine, [text])
    _check_exact(text, rows)
    assert [(r["text"], r["label"]) for r in rows] == [(f"魏{space}铭", "PER"), (f"李{space}明", "PER")]
    assert [r["start"] for r in rows] == [text.index("魏"), text.index("李")]


def test_windows_crlf_and_indents(engine):
    text = JUDGMENT.replace("\n", "\r\n")
    rows = _entities(engine, [text])
    _check_exact(text, rows)
    plain = _entities(engine, [JUDGMENT])
    assert [(r["text"], r["label"]) for r in rows] == [(r["text"], r["label"]) for r in plain]


def test_joined_lines_never_emit_an_entity_across_a_break():
    """``line_breaks="join"`` (text wrapped mid-sentence): sentences run over lines, and the
    span guard cuts any entity the model decodes across a break."""
    pipe = Pipeline(load_bundle(BUNDLE, "cpu", threads=1), line_breaks="join")
    result = pipe.infer(pipe.prepare(Unit(pa.array(["d"]), [JUDGMENT])))
    rows = result.entities.to_pylist()
    _check_exact(JUDGMENT, rows)
    assert ("魏\u3000铭", "PER") in {(r["text"], r["label"]) for r in rows}
