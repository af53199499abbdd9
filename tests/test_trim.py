"""Entity span trimming (engine/core/trim.py): one rule for evaluation and the engine."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nere.engine.core.decode import row_char_spans
from nere.engine.core.tags import TagSet
from nere.engine.core.trim import ABBREVIATIONS, is_edge, trim_entity_spans, trim_span, trim_spans


def _trimmed(text: str, piece: str | None = None) -> str | None:
    """The trimmed form of ``piece`` (the first occurrence in ``text``; all of it by default)."""
    piece = text if piece is None else piece
    s = text.index(piece)
    cut = trim_span(text, s, s + len(piece))
    return None if cut is None else text[cut[0]:cut[1]]


@pytest.mark.parametrize("piece, kept", [
    ("Austin.", "Austin"),          # a sentence-final period is not part of a name
    ("Kennedy.", "Kennedy"),
    ("IRS.", "IRS"),
    ("Acme Corp.", "Acme Corp."),   # a listed abbreviation keeps its period, sentence end or not
    ("Apple Inc.", "Apple Inc."),
    ("Martin Luther King Jr.", "Martin Luther King Jr."),
    ("St.", "St."),
    ("Calif.", "Calif."),
    ("U.S.", "U.S."),               # initialisms keep their last period
    ("N.Y.", "N.Y."),
    ("Washington, D.C.", "Washington, D.C."),
    ("R-S.C.", "R-S.C."),
    ("Calif.,", "Calif."),
    ("U.S.;", "U.S."),
    ("the U.S..", "the U.S."),
    ("the U.S. .", "the U.S."),
    ("Calif .", "Calif ."),         # tokenized text: the abbreviation's period split off
    ("N.J .", "N.J ."),
    ("Texas .", "Texas"),
])
def test_abbreviation_periods_stay_sentence_final_periods_go(piece, kept):
    assert _trimmed(piece) == kept


def test_periods_in_a_sentence():
    text = "He was born in Austin. He works for Acme Corp. in the U.S."
    assert _trimmed(text, "Austin.") == "Austin"
    assert _trimmed(text, "Acme Corp.") == "Acme Corp."
    assert _trimmed(text, "U.S.") == "U.S."
    end = "He works for Acme Corp."
    assert _trimmed(end, "Acme Corp.") == "Acme Corp."  # one period serves both
    assert {"corp", "inc", "jr", "st", "calif"} <= ABBREVIATIONS


@pytest.mark.parametrize("piece, kept", [
    ("Smith,", "Smith"), ("Kennedy;", "Kennedy"), ("Paris:", "Paris"), ('Acme"', "Acme"), ("Jones'", "Jones"),
    ("Pty)", "Pty"), ("(AP", "AP"), ("(AP)", "AP"), ("Acme (Pty)", "Acme (Pty)"), ("(Pty) Ltd", "(Pty) Ltd"),
    ('"JFK"', "JFK"), ("``Explains''", "Explains"), ("“Dream” Inc", "“Dream” Inc"), ("《人民日报》", "人民日报"),
    ("北京市。", "北京市"), ("（北京）", "北京"), ("$100", "$100"), ("#1", "#1"), ("AT&T", "AT&T"),
    ("O'Brien", "O'Brien"), ("-Smith-", "Smith"), ("'s National Press", "National Press"),
])
def test_stray_punctuation_goes_balanced_pairs_stay(piece, kept):
    assert _trimmed(piece) == kept


@pytest.mark.parametrize("piece", [".", ",", "...", "()", "“”", "，。", " ", "\u3000", " - ", "\n", "'"])
def test_punctuation_only_spans_are_dropped(piece):
    assert trim_span(piece, 0, len(piece)) is None
    assert trim_spans("x" + piece + "y", [(1, 1 + len(piece), "PER")]) == []


SPACES = ["\u3000", "\u00a0", *map(chr, range(0x2002, 0x200B)), "\u202f", "\u205f", "\t", " "]


@pytest.mark.parametrize("space", SPACES)
def test_unicode_spaces_leave_the_ends_and_stay_inside(space):
    text = f"审判员{space}魏{space}铭{space}"
    s = text.index("魏")
    assert trim_span(text, s - 1, len(text)) == (s, s + 3)  # leading/trailing spaces are never part of an entity
    assert text[s:s + 3] == f"魏{space}铭"  # the inner space is: a name written with spacing stays one entity
    assert is_edge(space)


def test_no_entity_crosses_a_line_break():
    text = "北京市海淀区人民法院\n民事判决书"
    assert _trimmed(text) == "北京市海淀区人民法院"  # the longest piece
    assert _trimmed("魏　铭\n二") == "魏　铭"
    assert _trimmed("ab\r\ncd") == "ab"  # equal pieces: the first
    assert _trimmed("x,\n Acme Corp.\u2028y") == "Acme Corp."
    assert _trimmed("\n\n") is None


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="aZ魏 \u3000\n\r\u2028.,;:()“”\"'`-$", max_size=20), st.data())
def test_trimmed_spans_are_exact_slices(text, data):
    """A trimmed span lies inside the decoded one, holds no line break, starts and ends
    with neither a space nor a line break, and trimming it again changes nothing."""
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, len(text)))
    cut = trim_span(text, start, end)
    if cut is None:
        return
    s, e = cut
    assert start <= s < e <= end
    piece = text[s:e]
    assert not any(c in piece for c in "\n\r\u2028\u2029")
    assert not piece[0].isspace() and not piece[-1].isspace()
    assert trim_span(text, s, e) == (s, e)


def test_evaluation_decodes_through_the_same_rule():
    ts = TagSet("BIO", ("PER", "LOC"))
    b_loc, i_loc, b_per = ts.tag_to_id["B-LOC"], ts.tag_to_id["I-LOC"], ts.tag_to_id["B-PER"]
    text = "born in Austin . ,"
    offsets = np.array([[-1, -1], [0, 4], [5, 7], [8, 14], [15, 16], [17, 18], [-1, -1]])
    tag_ids = np.array([0, 0, 0, b_loc, i_loc, b_per, 0])
    assert row_char_spans(ts, tag_ids, offsets, 1, 5) == [(8, 16, "LOC"), (17, 18, "PER")]  # without text: as decoded
    assert row_char_spans(ts, tag_ids, offsets, 1, 5, text) == [(8, 14, "LOC")]  # "Austin"; "," dropped


def test_many_entities_at_once():
    texts = ["Acme Corp. hired Bob,", "  \u3000魏\u3000铭。"]
    docs = np.array([0, 0, 1, 1])
    starts = np.array([0, 17, 0, 6])
    ends = np.array([10, 21, 6, 7])
    kept, s, e = trim_entity_spans(texts, docs, starts, ends)
    assert kept.tolist() == [0, 1, 2]  # "。" alone is dropped
    assert [texts[d][a:b] for d, a, b in zip(docs[kept], s, e)] == ["Acme Corp.", "Bob", "魏\u3000铭"]
    clean = trim_entity_spans(texts, np.array([0]), np.array([0]), np.array([4]))
    assert clean[0] is None and clean[1].tolist() == [0] and clean[2].tolist() == [4]
