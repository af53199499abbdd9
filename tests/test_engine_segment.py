"""Row checks, sentence splitting, windows and the window merge."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures_bundles import make_bundle
from nere.engine.bundle import load_bundle
from nere.engine.segment import check_text, check_texts, edge_distance, merge_windows, overlap_for, split_sentences, window_plan
from nere.engine.stages import bucket_width, plan_batches


@pytest.mark.parametrize(
    "value, reason",
    [
        (None, "null text"),
        (5, "text is not a string (int)"),
        (b"bytes", "text is not a string (bytes)"),
        ("", "empty text"),
        (" \n\t\u3000", "blank text"),
        ("\x00\x01\x7f", "only control characters"),
        ("x" * 11, "text too long (11 chars > max_doc_chars 10)"),
    ],
)
def test_bad_rows_get_a_reason(value, reason):
    text, why, _ = check_text(value, max_chars=10)
    assert text is None and why == reason


def test_control_characters_are_replaced_in_place():
    raw = "a\x00b\x1bc\td\ne\u0085\ud800"
    text, why, cleaned = check_text(raw)
    assert why is None and cleaned and len(text) == len(raw)
    assert text == "a b c\td\ne  "  # tab and newline stay; offsets unchanged
    assert check_text("mixed 文字 scripts ok") == ("mixed 文字 scripts ok", None, False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([None, 5, b"b", "", " ", "\u3000\n", "ok", "a\x00b", "\x7f", "\ud800x", "x" * 11,
                                 "北京 text", "fine."]), max_size=8))
def test_unit_checks_are_the_row_checks(values):
    """The whole-unit shortcut gives what checking each row gives, for every mix of rows."""
    texts, failures, cleaned = check_texts(values, max_chars=10)
    rows = [check_text(v, max_chars=10) for v in values]
    assert texts == [r[0] for r in rows]
    assert failures == [(i, r[1]) for i, r in enumerate(rows) if r[1] is not None]
    assert cleaned == sum(r[2] for r in rows)


def test_ascii_control_shortcut_is_the_regex():
    from nere.engine.segment import _CONTROL, _has_control

    for c in map(chr, range(0x100)):
        for text in (c, "ab" + c + "cd", c * 3):
            assert _has_control(text) == bool(_CONTROL.search(text)), repr(text)


def test_sentences_chinese_and_english():
    text = "  张三在北京。他说：“好！”Then Mr. Smith left. It was 3.5 p.m. today?  Yes  "
    got = [text[s:e] for s, e in split_sentences(text)]
    assert got == ["张三在北京。", "他说：“好！”", "Then Mr. Smith left.", "It was 3.5 p.m. today?", "Yes"]
    assert split_sentences(" \n ") == []
    news = "On Nov. 22 , 1963 . The Rev. Jesse spoke at No. 5 St. Paul. Hot at Death Valley, Calif. , to 85 degrees."
    assert [news[s:e] for s, e in split_sentences(news)] == [
        "On Nov. 22 , 1963 .", "The Rev. Jesse spoke at No. 5 St. Paul.", "Hot at Death Valley, Calif. , to 85 degrees."]


JUDGMENT = ("北京市海淀区人民法院\n民事判决书\n（2020）京0108民初12345号\n"
            "原告：张某某，男，1945年出生，住北京市海淀区。\r\n"
            "　　原告张某某与被告合同纠纷一案，本院于2020年5月1日立案后\n依法进行了审理。\n"
            "审判员　魏　铭\u2028二〇二〇年六月一日\n\n")


def test_line_breaks_end_sentences_by_default():
    got = [JUDGMENT[s:e] for s, e in split_sentences(JUDGMENT)]
    assert got == ["北京市海淀区人民法院", "民事判决书", "（2020）京0108民初12345号", "原告：张某某，男，1945年出生，住北京市海淀区。",
                   "原告张某某与被告合同纠纷一案，本院于2020年5月1日立案后", "依法进行了审理。", "审判员　魏　铭", "二〇二〇年六月一日"]
    assert split_sentences(JUDGMENT, line_breaks="split") == split_sentences(JUDGMENT)


def test_joined_lines_keep_the_old_rule():
    """``line_breaks="join"``: for text wrapped mid-sentence a break is a space."""
    got = [JUDGMENT[s:e] for s, e in split_sentences(JUDGMENT, line_breaks="join")]
    assert got == ["北京市海淀区人民法院\n民事判决书\n（2020）京0108民初12345号\n原告：张某某，男，1945年出生，住北京市海淀区。",
                   "原告张某某与被告合同纠纷一案，本院于2020年5月1日立案后\n依法进行了审理。",
                   "审判员　魏　铭\u2028二〇二〇年六月一日"]
    assert split_sentences("Mr. Smith\nleft.", line_breaks="join") == [(0, 15)]
    assert split_sentences("Mr. Smith\nleft.") == [(0, 9), (10, 15)]


def test_line_break_mode_is_checked():
    from nere.engine.core.sentences import sentence_spans
    from nere.engine.errors import EngineError

    with pytest.raises(EngineError, match="line_breaks must be one of split, join"):
        split_sentences("x", line_breaks="keep")
    with pytest.raises(ValueError, match="line_breaks"):
        sentence_spans("x", line_breaks="wrap")


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="甲乙 \u3000\n\r\u2028。！?.Mr", max_size=30))
def test_split_lines_are_the_sentences_of_each_line(text):
    """"split" is "join" applied to each line on its own: no sentence holds a break."""
    from nere.engine.core.sentences import sentence_spans

    expected, start = [], 0
    for k, ch in enumerate(text + "\n"):
        if ch in "\n\r\u2028\u2029":
            expected += [(start + s, start + e) for s, e in sentence_spans(text[start:k], periods=True)]
            start = k + 1
    got = split_sentences(text)
    assert got == expected
    assert not any(c in text[s:e] for s, e in got for c in "\n\r\u2028")


def test_window_plan_covers_with_overlap():
    assert window_plan(10, 14) == [0]
    starts = window_plan(40, 14)
    assert starts[0] == 0 and starts[-1] == 40 - 14
    assert all(b - a == 14 - overlap_for(14) for a, b in zip(starts, starts[1:-1]))
    assert all(a + 14 > b for a, b in zip(starts, starts[1:]))  # neighbours overlap


def test_edge_distance_ignores_sentence_ends():
    assert edge_distance(0, 2, 0, 14, 40) == 12  # the sentence's start is no cut
    assert edge_distance(11, 13, 11, 25, 40) == 0
    assert edge_distance(30, 33, 26, 40, 40) == 4


def test_merge_prefers_central_then_longer_and_dedupes():
    cands = [
        (12, 14, "Per", 0.9, 0),  # cut by window 1's right edge
        (12, 15, "Per", 0.8, 3),  # same entity whole, in window 2
        (12, 15, "Per", 0.8, 3),  # identical duplicate
        (20, 21, "Org", 0.7, 0),  # alone: kept even at an edge
        (14, 15, "Loc", 0.9, 0),  # disagrees with the central one
        (30, 31, "Per", 0.5, 2),
        (30, 32, "Per", 0.5, 2),  # equally central, longer wins
    ]
    assert merge_windows(cands) == [(12, 15, "Per", 0.8, 3), (20, 21, "Org", 0.7, 0), (30, 32, "Per", 0.5, 2)]


def test_batches_respect_token_budget(tmp_path):
    f = load_bundle(make_bundle(tmp_path / "b", max_length=64), device="cpu").featurizer
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 62, size=500)
    batches = plan_batches(lengths, f, budget=256)
    assert sorted(np.concatenate(batches).tolist()) == list(range(500))
    for b in batches:
        width = int(bucket_width(lengths[b].max() + f.n_special, f.max_length))
        assert width % 8 == 0 or width == f.max_length
        assert len(b) * width <= 256 or len(b) == 1
    big = plan_batches(np.array([62, 62]), f, budget=10)  # wider than the budget: one row each
    assert [len(b) for b in big] == [1, 1]


def test_collated_batches_have_bucket_width(tmp_path):
    """Stage-1 batches are built at the bucket width directly (multiple of 8, capped at
    max_length), each its own, when a unit's batches are gathered at once; from flat tokens
    and from items alike, padding beyond each row."""
    from nere.engine.core.featurize import Encoded, Tokens
    from nere.engine.stages import collate, collate_flat_many

    f = load_bundle(make_bundle(tmp_path / "b", max_length=20), device="cpu").featurizer
    ids = np.arange(5, 45, dtype=np.int64)
    offs = np.stack([np.arange(40), np.arange(40) + 1], axis=1)
    tokens = Tokens(ids, offs, np.array([0, 40]))
    cases = (([3, 1], 8), ([7], 16), ([18], 20))
    all_starts = [np.arange(len(counts)) * 2 for counts, _ in cases]
    gathered = collate_flat_many(f, tokens, np.concatenate(all_starts), np.concatenate([c for c, _ in cases]),
                                 [len(c) for c, _ in cases])
    for (counts, want), starts, b in zip(cases, all_starts, gathered):
        assert b.input_ids.shape[1] == want == b.attention_mask.shape[1]
        assert b.offsets is None  # the engine maps spans through the flat tokens
        assert (b.attention_mask.sum(axis=1) == np.array(counts) + f.n_special).all()
        items = [Encoded(ids[s : s + n], offs[s : s + n]) for s, n in zip(starts, counts)]
        a = collate(f, items)
        assert a.offsets.shape[1] == want
        assert (a.input_ids == b.input_ids).all() and (a.attention_mask == b.attention_mask).all()


def test_span_scores_are_mean_softmax_probabilities_of_the_decoded_tags():
    import numpy as np

    from nere.engine.stages import span_scores

    rng = np.random.default_rng(0)
    em = rng.normal(0, 3, (4, 9, 5)).astype(np.float32)
    tags = rng.integers(0, 5, (4, 9))
    rows, starts, ends = np.array([0, 0, 2, 3]), np.array([0, 4, 3, 8]), np.array([3, 5, 9, 9])
    got = span_scores(em, tags, rows, starts, ends)
    probs = np.exp(em) / np.exp(em).sum(-1, keepdims=True)
    want = [np.mean([probs[r, p, tags[r, p]] for p in range(s, e)]) for r, s, e in zip(rows, starts, ends)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
