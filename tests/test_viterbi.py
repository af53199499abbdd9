"""Numpy Viterbi == pytorch-crf's decode; argmax decoding; the decode helpers."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nere.engine.core.decode import decode_tags, row_char_spans
from nere.engine.core.tags import TagSet
from nere.engine.core.viterbi import argmax_decode, viterbi_decode

try:  # the [train] extra, installed in the dev environment; only the parity tests need it
    import torch
    import torchcrf
except ImportError:  # pragma: no cover
    torch = torchcrf = None
needs_torchcrf = pytest.mark.skipif(torchcrf is None, reason="pytorch-crf not installed")


def _random_crf(rng: np.random.Generator, ntags: int, scale: float) -> "torchcrf.CRF":
    crf = torchcrf.CRF(ntags, batch_first=True)
    with torch.no_grad():
        crf.transitions.copy_(torch.from_numpy(rng.normal(0, scale, (ntags, ntags)).astype(np.float32)))
        crf.start_transitions.copy_(torch.from_numpy(rng.normal(0, scale, ntags).astype(np.float32)))
        crf.end_transitions.copy_(torch.from_numpy(rng.normal(0, scale, ntags).astype(np.float32)))
    return crf


def _params(crf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        crf.transitions.detach().numpy(),
        crf.start_transitions.detach().numpy(),
        crf.end_transitions.detach().numpy(),
    )


def _torch_decode(crf, emissions: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    time = emissions.shape[1]
    mask = torch.from_numpy(np.arange(time)[None, :] < lengths[:, None])  # bool, left-aligned
    with torch.no_grad():
        return crf.decode(torch.from_numpy(emissions), mask=mask)


@needs_torchcrf
@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    batch=st.integers(1, 12),
    time=st.integers(1, 20),
    ntags=st.integers(1, 9),
    scale=st.sampled_from([0.1, 1.0, 5.0]),
    full=st.booleans(),
    strategy=st.sampled_from(["certified", "reference"]),
)
def test_viterbi_equals_pytorch_crf(seed, batch, time, ntags, scale, full, strategy):
    rng = np.random.default_rng(seed)
    crf = _random_crf(rng, ntags, scale)
    emissions = rng.normal(0, 2.0, (batch, time, ntags)).astype(np.float32)
    lengths = np.full(batch, time) if full else rng.integers(1, time + 1, batch)
    lengths[rng.integers(0, batch)] = time  # the batch is as wide as its longest row, as collate makes it
    expected = _torch_decode(crf, emissions, lengths)
    got = viterbi_decode(emissions, lengths, *_params(crf), strategy=strategy)
    assert got.shape == (batch, time) and got.dtype == np.int64
    for b in range(batch):
        assert got[b, : lengths[b]].tolist() == expected[b]
        assert not got[b, lengths[b] :].any()


@needs_torchcrf
@pytest.mark.parametrize("seed", range(4))
def test_viterbi_ragged_batch_with_length_one_rows(seed):
    rng = np.random.default_rng(100 + seed)
    crf = _random_crf(rng, 9, 1.0)
    lengths = np.array([1, 17, 1, 5, 17, 2, 1])
    emissions = rng.normal(0, 2.0, (len(lengths), 17, 9)).astype(np.float32)
    got = viterbi_decode(emissions, lengths, *_params(crf))
    for b, path in enumerate(_torch_decode(crf, emissions, lengths)):
        assert got[b, : lengths[b]].tolist() == path
        assert not got[b, lengths[b] :].any()


@needs_torchcrf
def test_viterbi_batch_of_one_length_one():
    rng = np.random.default_rng(7)
    crf = _random_crf(rng, 5, 1.0)
    emissions = rng.normal(size=(1, 1, 5)).astype(np.float32)
    got = viterbi_decode(emissions, np.array([1]), *_params(crf))
    assert got.tolist() == _torch_decode(crf, emissions, np.array([1]))


@pytest.mark.parametrize("strategy", ["certified", "reference"])
def test_viterbi_equals_brute_force(strategy):
    """An oracle independent of pytorch-crf: score every path of small problems."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        ntags, time = int(rng.integers(1, 4)), int(rng.integers(1, 6))
        trans, start, end = rng.normal(size=(ntags, ntags)), rng.normal(size=ntags), rng.normal(size=ntags)
        em = rng.normal(size=(1, time, ntags))
        best = max(
            itertools.product(range(ntags), repeat=time),
            key=lambda p: start[p[0]] + end[p[-1]] + sum(em[0, t, p[t]] for t in range(time))
            + sum(trans[p[t - 1], p[t]] for t in range(1, time)),
        )
        assert viterbi_decode(em, [time], trans, start, end, strategy)[0].tolist() == list(best)


@pytest.mark.parametrize("strategy", ["certified", "reference"])
def test_viterbi_with_ties_returns_a_best_path_per_row(strategy):
    """Integer scores make many paths tie: every row's path must still score the maximum
    (over all paths of its own length), whatever the other rows' lengths."""
    rng = np.random.default_rng(5)

    def score(p, em, trans, start, end):
        return start[p[0]] + end[p[-1]] + sum(em[t, p[t]] for t in range(len(p))) + sum(
            trans[p[t - 1], p[t]] for t in range(1, len(p)))

    for _ in range(30):
        ntags, time, batch = int(rng.integers(1, 4)), int(rng.integers(1, 6)), int(rng.integers(1, 5))
        trans, start, end = (rng.integers(-1, 2, size=s).astype(np.float32) for s in ((ntags, ntags), ntags, ntags))
        em = rng.integers(-1, 2, size=(batch, time, ntags)).astype(np.float32)
        lengths = rng.integers(1, time + 1, size=batch)
        got = viterbi_decode(em, lengths, trans, start, end, strategy)
        for b, n in enumerate(lengths):
            best = max(score(p, em[b], trans, start, end) for p in itertools.product(range(ntags), repeat=int(n)))
            assert score(got[b, :n].tolist(), em[b], trans, start, end) == best
            assert (got[b, n:] == 0).all()


def test_viterbi_transitions_are_from_to():
    # emissions are flat; the only reward is moving 0 -> 1: the path must be 0, 1
    trans = np.array([[0.0, 5.0], [-5.0, 0.0]], dtype=np.float32)
    got = viterbi_decode(np.zeros((1, 2, 2), np.float32), [2], trans, np.zeros(2), np.zeros(2))
    assert got.tolist() == [[0, 1]]


@pytest.mark.parametrize("lengths", [[0, 3], [4, 3], [-1, 1]])
def test_viterbi_rejects_bad_lengths(lengths):
    with pytest.raises(ValueError, match="length"):
        viterbi_decode(np.zeros((2, 3, 4)), lengths, np.zeros((4, 4)), np.zeros(4), np.zeros(4))


def test_empty_batch():
    k = 5
    trans, start, end = np.zeros((k, k)), np.zeros(k), np.zeros(k)
    for time in (0, 6):
        out = viterbi_decode(np.zeros((0, time, k), np.float32), np.zeros(0, np.int64), trans, start, end)
        assert out.shape == (0, time) and out.dtype == np.int64
        out = argmax_decode(np.zeros((0, time, k), np.float32), np.zeros(0, np.int64))
        assert out.shape == (0, time) and out.dtype == np.int64
    assert decode_tags(np.zeros((0, 4, k)), np.zeros(0, np.int64)).shape == (0, 4)
    crf = {"transitions": trans, "start": start, "end": end}
    assert decode_tags(np.zeros((0, 4, k)), np.zeros(0, np.int64), crf).shape == (0, 4)


def test_argmax_decode_zeroes_beyond_length():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 6, 5))
    logits[..., 0] -= 100  # tag 0 never wins inside a sequence
    lengths = np.array([6, 1, 3, 0])
    out = argmax_decode(logits, lengths)
    assert out.dtype == np.int64
    full = logits.argmax(-1)
    for b, n in enumerate(lengths):
        assert out[b, :n].tolist() == full[b, :n].tolist()
        assert (out[b, n:] == 0).all()
        assert (out[b, :n] != 0).all()


def test_decode_tags_dispatch():
    rng = np.random.default_rng(1)
    em = rng.normal(size=(3, 5, 4)).astype(np.float32)
    lengths = np.array([5, 2, 4])
    assert np.array_equal(decode_tags(em, lengths), argmax_decode(em, lengths))
    # a strong transition prior makes Viterbi differ from argmax
    trans = np.full((4, 4), -50.0, np.float32)
    np.fill_diagonal(trans, 0.0)
    crf = {"transitions": trans, "start": np.zeros(4, np.float32), "end": np.zeros(4, np.float32)}
    out = decode_tags(em, lengths, crf)
    assert np.array_equal(out, viterbi_decode(em, lengths, trans, crf["start"], crf["end"]))
    for b, n in enumerate(lengths):
        assert len(set(out[b, :n].tolist())) == 1  # never leaves its first tag


def test_row_char_spans_ignores_special_positions():
    ts = TagSet("BIO", ("PER", "LOC"))
    b_per, i_per, b_loc = ts.tag_to_id["B-PER"], ts.tag_to_id["I-PER"], ts.tag_to_id["B-LOC"]
    # [CLS] Ann Lee in Rome [SEP] [PAD]; the model tagged [CLS], [SEP] and [PAD] too
    text = "Ann Lee in Rome"
    offsets = np.array([[-1, -1], [0, 3], [4, 7], [8, 10], [11, 15], [-1, -1], [-1, -1]])
    tag_ids = np.array([b_loc, b_per, i_per, 0, b_loc, i_per, b_per])
    spans = row_char_spans(ts, tag_ids, offsets, lead=1, n_content=4)
    assert spans == [(0, 7, "PER"), (11, 15, "LOC")]
    assert [text[s:e] for s, e, _ in spans] == ["Ann Lee", "Rome"]


# ---- certified positions: decided without search, islands searched between them ----------

from nere.engine.core import viterbi as viterbi_module  # noqa: E402
from nere.engine.core.viterbi import (  # noqa: E402
    CRFDecoder, certified_path, rounding_margin, run_bounds, search_sorted, top_two)


def _confident(rng: np.random.Generator, batch: int, time: int, ntags: int, strength: float) -> np.ndarray:
    """Emissions of a confident model: one tag per position well above the rest."""
    em = rng.normal(0, 1.0, (batch, time, ntags)).astype(np.float32)
    top = rng.choice(ntags, size=(batch, time), p=[0.7] + [0.3 / (ntags - 1)] * (ntags - 1))
    np.put_along_axis(em, top[..., None], np.take_along_axis(em, top[..., None], -1) + strength, axis=-1)
    return em


def _sorted_layout(emissions: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows longest first, as (time, tags, rows): the decoder's own layout."""
    order = np.argsort(-lengths, kind="stable")
    lens = lengths[order]
    return np.ascontiguousarray(emissions[order][:, : lens[0]].transpose(1, 2, 0).astype(np.float32)), lens, order


def _full_search(emissions: np.ndarray, lengths: np.ndarray, trans, start, end) -> np.ndarray:
    """The dynamic programme over whole rows, nothing certified (the reference strategy)."""
    return CRFDecoder(trans, start, end, strategy="reference").decode(emissions, lengths)


def test_reference_strategy_is_the_plain_dynamic_programme(monkeypatch):
    """The reference strategy never certifies: whole rows through search_sorted; an
    unknown strategy is refused."""
    monkeypatch.setattr(viterbi_module, "certified_path", lambda *a: pytest.fail("the reference certified"))
    monkeypatch.setattr(viterbi_module, "run_bounds", lambda *a: pytest.fail("the reference computed bounds"))
    rng = np.random.default_rng(21)
    trans, start, end = (rng.normal(0, 1.0, s).astype(np.float32) for s in ((5, 5), 5, 5))
    em, lengths = _confident(rng, 8, 12, 5, strength=6.0), rng.integers(1, 13, 8)
    lengths[0] = 12
    decoder = CRFDecoder(trans, start, end, strategy="reference")
    layout, lens, order = _sorted_layout(em, lengths)
    want = np.zeros(em.shape[:2], np.int64)
    want[order, : lens[0]] = search_sorted(layout, lens, trans, start[:, None], end[None, :])
    assert decoder.strategy == "reference" and np.array_equal(decoder.decode(em, lengths), want)
    with pytest.raises(ValueError, match="strategy must be one of certified, reference"):
        CRFDecoder(trans, start, end, strategy="fast")


def _certified(emissions, lengths, trans, start, end) -> tuple[np.ndarray, np.ndarray]:
    """(rows, time) reference tags and free mask, in the caller's row order."""
    trans, start, end = (np.asarray(x, np.float32) for x in (trans, start, end))
    em, lens, order = _sorted_layout(emissions, lengths)
    tag, free = certified_path(em, lens, run_bounds(trans, start, end), rounding_margin(em, trans, start, end))
    tags, frees = np.zeros(emissions.shape[:2], np.int64), np.zeros(emissions.shape[:2], bool)
    tags[order, : lens[0]], frees[order, : lens[0]] = tag.T, free.T
    return tags, frees


def _pin_share(emissions, lengths, trans, start, end) -> float:
    return 1 - _certified(emissions, lengths, trans, start, end)[1].sum() / lengths.sum()


def _bioes_crf(rng: np.random.Generator, types: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A BIOES CRF as training leaves one: allowed moves near +1, forbidden ones near -8
    (large negative, not -inf); and tag paths drawn from the allowed moves."""
    tags = ["O"] + [f"{p}-{k}" for k in range(types) for p in "BIES"]
    n = len(tags)

    def allowed(a: str, b: str) -> bool:
        if a[0] in "BI":
            return b[0] in "IE" and b[2:] == a[2:]
        return b[0] in "OBS"

    ok = np.array([[allowed(a, b) for b in tags] for a in tags])
    trans = np.where(ok, rng.normal(1.0, 0.5, (n, n)), rng.normal(-8.0, 1.0, (n, n))).astype(np.float32)
    start = np.where([t[0] in "OBS" for t in tags], 0.5, -7.0).astype(np.float32)
    end = np.where([t[0] in "OES" for t in tags], 0.5, -7.0).astype(np.float32)
    return trans, start, end, ok


def _bioes_emissions(rng: np.random.Generator, ok: np.ndarray, batch: int, time: int, strength: float) -> np.ndarray:
    """Emissions favouring an allowed tag path, by ``strength`` over noise."""
    n = ok.shape[0]
    em = rng.normal(0, 1.0, (batch, time, n)).astype(np.float32)
    for b in range(batch):
        y = 0
        for t in range(time):
            choices = np.flatnonzero(ok[y])
            y = int(rng.choice(choices, p=None if y else [0.8] + [0.2 / (len(choices) - 1)] * (len(choices) - 1)))
            em[b, t, y] += strength
    return em


@pytest.mark.parametrize("seed", range(6))
def test_certified_decoding_equals_the_full_search(seed):
    rng = np.random.default_rng(200 + seed)
    ntags, batch, time = int(rng.integers(3, 18)), int(rng.integers(20, 120)), int(rng.integers(5, 60))
    trans, start, end = (rng.normal(0, 0.5, s).astype(np.float32) for s in ((ntags, ntags), ntags, ntags))
    em = _confident(rng, batch, time, ntags, strength=6.0)
    lengths = rng.integers(1, time + 1, batch)
    lengths[0] = time
    share = _pin_share(em, lengths, trans, start, end)
    assert 0.5 < share < 1.0  # certificates are used, and islands are left to search
    assert np.array_equal(viterbi_decode(em, lengths, trans, start, end), _full_search(em, lengths, trans, start, end))


@needs_torchcrf
@pytest.mark.parametrize("seed", range(4))
def test_certified_decoding_equals_pytorch_crf(seed):
    rng = np.random.default_rng(300 + seed)
    crf = _random_crf(rng, 9, 0.5)
    em = _confident(rng, 40, 30, 9, strength=6.0)
    lengths = rng.integers(1, 31, 40)
    lengths[3] = 30
    assert _pin_share(em, lengths, *_params(crf)) > 0.5
    got = viterbi_decode(em, lengths, *_params(crf))
    for b, path in enumerate(_torch_decode(crf, em, lengths)):
        assert got[b, : lengths[b]].tolist() == path


@pytest.mark.parametrize("seed", range(4))
def test_a_crf_that_forbids_moves_is_certified_where_the_top_tags_form_a_good_path(seed):
    """BIOES transitions (forbidden moves at about -8): the reference path's own
    neighbours bound the gains, so most positions are certified wherever the emissions
    follow an allowed path, and the paths equal the full search; with weak emissions
    (top tags often a forbidden sequence) far fewer are, and the paths still equal it."""
    rng = np.random.default_rng(600 + seed)
    trans, start, end, ok = _bioes_crf(rng, types=3)
    lengths = rng.integers(1, 41, 60)
    lengths[0] = 40
    shares = []
    for strength in (6.0, 0.5):
        em = _bioes_emissions(rng, ok, 60, 40, strength)
        shares.append(_pin_share(em, lengths, trans, start, end))
        assert np.array_equal(viterbi_decode(em, lengths, trans, start, end), _full_search(em, lengths, trans, start, end))
    assert shares[0] > 0.9 and shares[1] < 0.1


def test_certified_tags_are_on_every_best_path_brute_force():
    """Certified positions hold the tag of the best path (checked on every path of small
    problems, including integer scores where paths tie, and CRFs that forbid moves);
    islands that start a sentence, end it, or fill it whole are searched with the right
    boundary scores."""
    rng = np.random.default_rng(11)
    checked = 0
    for case in range(240):
        ntags, time = int(rng.integers(2, 5)), int(rng.integers(1, 7))
        kind = case % 3
        if kind == 0:  # integer scores: many ties
            trans, start, end = (rng.integers(-1, 2, size=s).astype(np.float32) for s in ((ntags, ntags), ntags, ntags))
            em = rng.integers(-1, 2, size=(1, time, ntags)).astype(np.float32)
            em[0, rng.random(time) < 0.7, 0] += 6  # most positions strongly tag 0
        else:
            trans, start, end = (rng.normal(0, 0.5, s).astype(np.float32) for s in ((ntags, ntags), ntags, ntags))
            if kind == 2:  # some moves forbidden
                trans[rng.random((ntags, ntags)) < 0.3] = -8.0
            em = _confident(rng, 1, time, ntags, strength=float(rng.choice([0.5, 3.0, 8.0])))

        def score(p):
            return start[p[0]] + end[p[-1]] + sum(em[0, t, p[t]] for t in range(time)) + sum(
                trans[p[t - 1], p[t]] for t in range(1, time))

        paths = list(itertools.product(range(ntags), repeat=time))
        scores = np.array([score(p) for p in paths])
        best_paths = [p for p, s in zip(paths, scores) if s == scores.max()]
        tag, free = _certified(em, np.array([time]), trans, start, end)
        for t in np.flatnonzero(~free[0, :time]):
            assert all(p[t] == tag[0, t] for p in best_paths)
            checked += 1
        path = viterbi_decode(em, [time], trans, start, end)[0].tolist()
        assert score(path) == scores.max()
        if kind:
            assert tuple(path) == best_paths[0] and len(best_paths) == 1
    assert checked > 200  # the test did exercise certificates


def test_top_two_handles_ties_and_takes_the_first_top_tag():
    em = np.array([[3, 1, 3, 0], [0, 2, 1, 2], [-1, -5, -2, -1]], np.float32).T[None, :, :]  # (1 step, 4 tags, 3 rows)
    best, tag, second = top_two(np.ascontiguousarray(em))
    assert best.tolist() == [[3, 2, -1]] and tag.tolist() == [[0, 1, 0]] and second.tolist() == [[3, 2, -1]]
    em = np.array([[1, 5, 2]], np.float32)[:, :, None]  # (1 step, 3 tags, 1 row)
    best, tag, second = top_two(em)
    assert (best.item(), tag.item(), second.item()) == (5, 1, 2)


def test_weak_emissions_search_whole_rows(monkeypatch):
    """Where most positions stay free (flat emissions), whole rows go through the
    dynamic programme, not the islands; the paths equal the full search."""
    rng = np.random.default_rng(4)
    ntags = 5
    trans, start, end = (rng.normal(0, 1.0, s).astype(np.float32) for s in ((ntags, ntags), ntags, ntags))
    em = rng.normal(0, 0.05, (30, 20, ntags)).astype(np.float32)
    lengths = rng.integers(1, 21, 30)
    lengths[0] = 20
    assert _pin_share(em, lengths, trans, start, end) < 1 - viterbi_module.FULL_SEARCH_SHARE
    islands = []
    real = viterbi_module._search_islands
    monkeypatch.setattr(viterbi_module, "_search_islands", lambda *a: islands.append(1) or real(*a))
    assert np.array_equal(CRFDecoder(trans, start, end).decode(em, lengths), _full_search(em, lengths, trans, start, end))
    assert not islands


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_emissions_skip_the_certificate(bad, monkeypatch):
    """No bound holds on infinite or NaN scores: the decoder searches whole rows, as the
    plain dynamic programme would, rather than certifying from them."""
    rng = np.random.default_rng(8)
    trans, start, end = (rng.normal(0, 0.5, s).astype(np.float32) for s in ((4, 4), 4, 4))
    em = _confident(rng, 6, 10, 4, strength=6.0)
    em[2, 3, 1] = bad
    lengths = np.full(6, 10)
    monkeypatch.setattr(viterbi_module, "certified_path", lambda *a: pytest.fail("certified non-finite scores"))
    got = CRFDecoder(trans, start, end).decode(em, lengths)
    assert np.array_equal(got, _full_search(em, lengths, trans, start, end))


def test_one_tag_crf_gives_the_only_path():
    got = viterbi_decode(np.random.default_rng(0).normal(size=(3, 5, 1)), [5, 2, 1], np.zeros((1, 1)), [0.0], [0.0])
    assert got.shape == (3, 5) and not got.any()


def test_a_decoder_whose_certificates_keep_failing_stops_certifying(monkeypatch):
    """Weak emissions leave most positions free, so the certificate only costs: a kept
    decoder stops computing it after CERTIFY_GIVE_UP such calls in a row, except every
    CERTIFY_RETRY_EVERY-th call; confident emissions bring it back; paths never change."""
    rng = np.random.default_rng(9)
    ntags = 5
    trans, start, end = (rng.normal(0, 1.0, s).astype(np.float32) for s in ((ntags, ntags), ntags, ntags))
    weak = rng.normal(0, 0.05, (30, 20, ntags)).astype(np.float32)
    strong = _confident(rng, 30, 20, ntags, strength=8.0)
    lengths = np.full(30, 20)
    certified = []
    real = viterbi_module.certified_path
    monkeypatch.setattr(viterbi_module, "certified_path", lambda *a: certified.append(1) or real(*a))
    decoder = CRFDecoder(trans, start, end)
    want_weak, want_strong = (_full_search(em, lengths, trans, start, end) for em in (weak, strong))
    calls = 2 * viterbi_module.CERTIFY_RETRY_EVERY
    for _ in range(calls):
        assert np.array_equal(decoder.decode(weak, lengths), want_weak)
    assert len(certified) == viterbi_module.CERTIFY_GIVE_UP + calls // viterbi_module.CERTIFY_RETRY_EVERY
    for _ in range(viterbi_module.CERTIFY_RETRY_EVERY):  # the next retry certifies, and passes
        assert np.array_equal(decoder.decode(strong, lengths), want_strong)
    before = len(certified)
    for _ in range(3):
        assert np.array_equal(decoder.decode(strong, lengths), want_strong)
    assert len(certified) == before + 3


def test_kept_decoder_wraps_crf_arrays_once():
    from nere.engine.core.decode import kept_decoder

    rng = np.random.default_rng(12)
    crf = {k: rng.normal(size=s).astype(np.float32) for k, s in (("transitions", (4, 4)), ("start", 4), ("end", 4))}
    decoder = kept_decoder(crf)
    assert isinstance(decoder, CRFDecoder) and kept_decoder(decoder) is decoder and kept_decoder(None) is None
    em, lengths = rng.normal(size=(5, 7, 4)).astype(np.float32), np.array([7, 3, 1, 7, 5])
    assert np.array_equal(decode_tags(em, lengths, decoder), decode_tags(em, lengths, crf))


def test_run_bounds_match_their_definitions():
    """Each bound against its definition, by brute force (integer transitions, so maxima
    tie); and many tags stay cheap (the bounds are O(tags^2), not a (tags^4) table)."""
    rng = np.random.default_rng(13)
    for n in (2, 3, 5, 8):
        trans, start, end = (rng.integers(-2, 3, size=s).astype(np.float32) for s in ((n, n), n, n))
        b = run_bounds(trans, start, end)
        t = trans.astype(np.float64)
        for p in range(n):
            for q in range(n):
                k = p * n + q
                assert b.enter[k] == max(t[p, y] for y in range(n) if y != q) - t[p, q]
                assert b.leave[k] == max(t[y, q] for y in range(n) if y != p) - t[p, q]
                assert b.inner[k] == max(t[y, z] for y in range(n) for z in range(n) if y != p and z != q) - t[p, q]
            assert b.start[p] == max(start[y] for y in range(n) if y != p) - start[p]
            assert b.end[p] == max(end[y] for y in range(n) if y != p) - end[p]
    many = run_bounds(*(rng.normal(size=s).astype(np.float32) for s in ((401, 401), 401, 401)))  # 100 BIOES types
    assert many.inner.shape == (401 * 401,) and np.isfinite(many.inner).all()


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    batch=st.integers(1, 40),
    time=st.integers(1, 30),
    ntags=st.integers(2, 13),
    strength=st.sampled_from([1.0, 3.0, 6.0, 12.0]),
    forbid=st.sampled_from([0.0, 0.3, 0.6]),
)
def test_certified_decoding_equals_the_full_search_property(seed, batch, time, ntags, strength, forbid):
    """Any mix of confidence and forbidden moves (about -8): certified positions plus
    searched islands give the full search's paths, whatever share is certified."""
    rng = np.random.default_rng(seed)
    trans, start, end = (rng.normal(0, 1.0, s).astype(np.float32) for s in ((ntags, ntags), ntags, ntags))
    trans[rng.random((ntags, ntags)) < forbid] = -8.0
    em = _confident(rng, batch, time, ntags, strength=strength)
    lengths = rng.integers(1, time + 1, batch)
    lengths[rng.integers(0, batch)] = time
    assert np.array_equal(CRFDecoder(trans, start, end).decode(em, lengths), _full_search(em, lengths, trans, start, end))
