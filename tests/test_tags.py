"""Tag schemes: spans <-> tags round trips, scheme conversion, lenient decoding, errors."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nere.engine.core.tags import SCHEMES, TagSet, convert_tags, spans_to_tags, split_tag, tags_to_spans

LABELS = ("PER", "LOC", "ORG", "GPE-X")  # one label holds a '-': only the first '-' splits


@st.composite
def token_spans(draw, max_len: int = 30) -> tuple[list[tuple[int, int, str]], int]:
    """Random non-overlapping token spans (adjacent ones included) and a sequence length."""
    length = draw(st.integers(0, max_len))
    spans, pos = [], 0
    while pos < length:
        pos += draw(st.integers(0, 3))  # gap, possibly none: adjacent entities
        if pos >= length:
            break
        width = draw(st.integers(1, min(5, length - pos)))
        spans.append((pos, pos + width, draw(st.sampled_from(LABELS))))
        pos += width
    return spans, length


@pytest.mark.parametrize("scheme", SCHEMES)
@settings(max_examples=150, deadline=None)
@given(data=token_spans())
def test_spans_tags_round_trip(scheme, data):
    spans, length = data
    tags = spans_to_tags(spans, length, scheme)
    assert len(tags) == length
    assert tags_to_spans(tags, scheme) == spans
    # every tag uses only this scheme's letters
    letters = {t.split("-", 1)[0] for t in tags}
    allowed = {"O"} | set({"BIO": "BI", "BIOES": "BIES", "BILOU": "BILU", "BMES": "BMES"}[scheme])
    assert letters <= allowed


@pytest.mark.parametrize("source", SCHEMES)
@pytest.mark.parametrize("target", SCHEMES)
@settings(max_examples=40, deadline=None)
@given(data=token_spans())
def test_convert_tags(source, target, data):
    spans, length = data
    converted = convert_tags(spans_to_tags(spans, length, source), source, target)
    assert converted == spans_to_tags(spans, length, target)
    assert tags_to_spans(converted, target) == spans


def test_convert_tags_examples():
    bioes = ["B-PER", "I-PER", "E-PER", "S-LOC", "O"]
    assert convert_tags(bioes, "BIOES", "BIO") == ["B-PER", "I-PER", "I-PER", "B-LOC", "O"]
    assert convert_tags(bioes, "BIOES", "BILOU") == ["B-PER", "I-PER", "L-PER", "U-LOC", "O"]
    assert convert_tags(bioes, "BIOES", "BMES") == ["B-PER", "M-PER", "E-PER", "S-LOC", "O"]
    # MSRA ships BMES; models use BIO: two adjacent same-type entities stay apart
    assert convert_tags(["S-PER", "B-PER", "E-PER"], "bmes", "bio") == ["B-PER", "B-PER", "I-PER"]


@pytest.mark.parametrize("scheme", SCHEMES)
@settings(max_examples=60, deadline=None)
@given(data=token_spans())
def test_tagset_ids_round_trip(scheme, data):
    spans, length = data
    ts = TagSet(scheme, LABELS)
    assert ts.tags[0] == "O"
    assert len(ts.tags) == len(set(ts.tags)) == 1 + len(LABELS) * (2 if scheme == "BIO" else 4)
    assert all(ts.tag_to_id[t] == i for i, t in enumerate(ts.tags))
    ids = ts.spans_to_ids(spans, length)
    assert all(0 <= i < len(ts.tags) for i in ids)
    assert [ts.tags[i] for i in ids] == spans_to_tags(spans, length, scheme)
    assert ts.ids_to_spans(ids) == spans


def test_tagset_normalises_scheme_case():
    assert TagSet("bioes", ("PER",)).scheme == "BIOES"
    assert TagSet("BIO", ("PER", "LOC")).tags == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


# Lenient decoding, as conlleval reads a model's (possibly invalid) predictions.
@pytest.mark.parametrize(
    "scheme,tags,spans",
    [
        # I- after O starts an entity
        ("BIO", ["O", "I-PER", "I-PER", "O"], [(1, 3, "PER")]),
        ("BIOES", ["O", "I-PER", "E-PER"], [(1, 3, "PER")]),
        # I- of another type ends the open entity and starts a new one
        ("BIO", ["B-PER", "I-LOC", "I-LOC"], [(0, 1, "PER"), (1, 3, "LOC")]),
        # E- of another type
        ("BIOES", ["B-PER", "I-PER", "E-LOC"], [(0, 2, "PER"), (2, 3, "LOC")]),
        ("BILOU", ["B-PER", "L-LOC"], [(0, 1, "PER"), (1, 2, "LOC")]),
        # E- after O is a one-token entity
        ("BIOES", ["O", "E-PER", "O"], [(1, 2, "PER")]),
        # trailing open entity is closed at the end
        ("BIOES", ["O", "B-PER", "I-PER"], [(1, 3, "PER")]),
        ("BMES", ["B-ORG"], [(0, 1, "ORG")]),
        # MSRA: a sentence that begins inside an entity cut by a sentence break
        ("BMES", ["M-PER", "E-PER", "O", "S-LOC", "M-LOC"], [(0, 2, "PER"), (3, 4, "LOC"), (4, 5, "LOC")]),
        # B- inside an open entity starts a new one
        ("BIO", ["B-PER", "B-PER", "I-PER"], [(0, 1, "PER"), (1, 3, "PER")]),
        # I- after an entity that an E- closed starts a new one
        ("BIOES", ["B-PER", "E-PER", "I-PER", "E-PER"], [(0, 2, "PER"), (2, 4, "PER")]),
        # S- closes an open entity
        ("BIOES", ["B-PER", "I-PER", "S-PER"], [(0, 2, "PER"), (2, 3, "PER")]),
        ("BIO", [], []),
    ],
)
def test_lenient_decoding(scheme, tags, spans):
    assert tags_to_spans(tags, scheme) == spans


@pytest.mark.parametrize(
    "tag", ["B", "B-", "-PER", "BB-PER", "PER", "", "o", "O-PER", "B_PER"]
)
def test_malformed_tags_raise(tag):
    with pytest.raises(ValueError, match="malformed tag"):
        split_tag(tag)
    with pytest.raises(ValueError, match="malformed tag"):
        tags_to_spans(["O", tag], "BIOES")


@pytest.mark.parametrize("scheme,tag", [("BIO", "E-PER"), ("BIO", "S-PER"), ("BIOES", "L-PER"), ("BMES", "I-PER")])
def test_letter_outside_scheme_raises(scheme, tag):
    with pytest.raises(ValueError, match=rf"letter .* not part of scheme {scheme}"):
        tags_to_spans(["O", tag], scheme)


@pytest.mark.parametrize("scheme", ["IOB1", "bioe", "", "BIO2"])
def test_unknown_scheme_raises(scheme):
    with pytest.raises(ValueError, match=r"unknown tag scheme .*choose one of BIO, BIOES, BILOU, BMES"):
        spans_to_tags([], 3, scheme)
    with pytest.raises(ValueError, match="unknown tag scheme"):
        tags_to_spans(["O"], scheme)
    with pytest.raises(ValueError, match="unknown tag scheme"):
        TagSet(scheme, ("PER",))
    with pytest.raises(ValueError, match="unknown tag scheme"):
        convert_tags(["O"], "BIO", scheme)


@pytest.mark.parametrize(
    "spans",
    [
        [(0, 3, "PER"), (2, 4, "LOC")],  # partial overlap
        [(1, 4, "PER"), (2, 3, "LOC")],  # nested
        [(1, 3, "PER"), (1, 3, "LOC")],  # same span, two labels
        [(2, 3, "PER"), (0, 5, "ORG")],  # given in any order
    ],
)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_overlapping_spans_raise(spans, scheme):
    with pytest.raises(ValueError, match="overlaps another span"):
        spans_to_tags(spans, 6, scheme)


@pytest.mark.parametrize("span", [(-1, 2, "PER"), (3, 3, "PER"), (4, 2, "PER"), (5, 7, "PER")])
def test_out_of_range_spans_raise(span):
    with pytest.raises(ValueError, match="outside a sequence of length 6"):
        spans_to_tags([span], 6)


def _reference_decode(tags: list[str], scheme: str) -> list[tuple[int, int, str]]:
    """The lenient decoder written as a plain loop over positions (the first version's
    implementation), kept here as the reference for the vectorised one."""
    role_of = {ch: role for role, ch in {"BIO": {"B": "B", "I": "I"}, "BIOES": {"B": "B", "I": "I", "E": "E", "S": "S"},
                                          "BILOU": {"B": "B", "I": "I", "E": "L", "S": "U"},
                                          "BMES": {"B": "B", "I": "M", "E": "E", "S": "S"}}[scheme].items()}
    spans, open_start, open_label, prev = [], -1, None, -2
    for i, tag in enumerate(tags):
        if tag == "O":
            continue
        letter, label = tag.split("-", 1)
        role = role_of[letter]
        if open_label is not None and i != prev + 1:
            spans.append((open_start, prev + 1, open_label))
            open_label = None
        if role in ("B", "S") or label != open_label:
            if open_label is not None:
                spans.append((open_start, i, open_label))
            open_label = None
            if role == "S":
                spans.append((i, i + 1, label))
            else:
                open_start, open_label = i, label
        if role == "E" and open_label is not None:
            spans.append((open_start, i + 1, open_label))
            open_label = None
        prev = i
    if open_label is not None:
        spans.append((open_start, prev + 1, open_label))
    return spans


@pytest.mark.parametrize("scheme", SCHEMES)
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_batch_spans_equal_the_reference_on_any_tag_grid(scheme, data):
    """Random (often invalid) id grids with ragged lengths: batch_spans, ids_to_spans per row
    and tags_to_spans all equal the loop decoder."""
    ts = TagSet(scheme, LABELS)
    rows, width = data.draw(st.integers(0, 5)), data.draw(st.integers(0, 12))
    ids = np.array(data.draw(st.lists(st.lists(st.integers(0, len(ts.tags) - 1), min_size=width, max_size=width),
                                      min_size=rows, max_size=rows)), dtype=np.int64).reshape(rows, width)
    lengths = np.array(data.draw(st.lists(st.integers(0, width), min_size=rows, max_size=rows)), dtype=np.int64)
    r, s, e, lab = ts.batch_spans(ids, lengths)
    got = [[] for _ in range(rows)]
    for k in range(len(r)):
        got[int(r[k])].append((int(s[k]), int(e[k]), lab[k]))
    for i in range(rows):
        tags = [ts.tags[t] for t in ids[i, : lengths[i]]]
        want = _reference_decode(tags, scheme)
        assert got[i] == want
        assert ts.ids_to_spans(ids[i, : lengths[i]]) == want
        assert tags_to_spans(tags, scheme) == want
