"""CRF Viterbi decoding in numpy, vectorised over the batch.

Same conventions as pytorch-crf: ``transitions[i, j]`` scores moving from tag i to
tag j; ``start``/``end`` score the first/last tag; the mask is a left-aligned prefix
(``lengths`` per sequence). The loop runs over time steps only, never over sequences,
and each step touches only the sequences still running.

:class:`CRFDecoder` has two strategies that give the same paths: ``"reference"``, the
plain dynamic programme over whole rows (:func:`search_sorted`), and ``"certified"``
(the default), which searches only where the reference cannot be skipped and is tested
against it.

Most positions need no search. Take a reference path, each position's top-emission tag,
and bound what any other path can gain over it (:func:`certified_path`): another path
differs from it on runs of positions, each run's gain is at most a sum of per-position
terms, and the best run through each position is a prefix maximum plus a suffix maximum,
computed for every position at once. Where no run can gain, the reference tag is on the
best path and the position is pinned; only the free stretches between pinned positions
("islands") go through the dynamic programme, as short sequences whose start and end
scores are the transitions from and to their pinned neighbours. The bound looks at the
reference path's own neighbours, so a CRF whose transitions forbid much (a BIOES
tagger's large negative scores) pins wherever the top tags already form a well-scored path.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from nere.engine.core.featurize import expand_ranges

FULL_SEARCH_SHARE = 0.5  # search whole rows when this share of positions or more would stay free
CERTIFY_GIVE_UP = 4  # a decoder whose certificates left that share free this many calls in a row ...
CERTIFY_RETRY_EVERY = 16  # ... certifies again only every CERTIFY_RETRY_EVERY-th call


STRATEGIES = ("certified", "reference")


def viterbi_decode(
    emissions: np.ndarray,
    lengths: np.ndarray,
    transitions: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    strategy: str = "certified",
) -> np.ndarray:
    """Best tag path per sequence.

    Args:
        emissions: (batch, time, tags) float scores.
        lengths: (batch,) valid lengths, each >= 1 and <= time.
        transitions, start, end: the CRF's parameters, (tags, tags), (tags,), (tags,).
        strategy: ``"certified"`` or ``"reference"`` (see :class:`CRFDecoder`); same paths.
    Returns:
        (batch, time) int64 tags; positions at or beyond a sequence's length are 0.
    """
    return CRFDecoder(transitions, start, end, strategy).decode(emissions, lengths)


class CRFDecoder:
    """Viterbi for one CRF's parameters, kept for many calls (the engine's).

    ``strategy="reference"`` runs the plain dynamic programme over whole rows.
    ``strategy="certified"`` pins the positions a certificate decides and searches only
    the islands between them; its bounds (:func:`run_bounds`) are computed once, and a
    model whose certificates keep leaving most positions free (weak emissions) stops
    paying for them after ``CERTIFY_GIVE_UP`` such calls, except every
    ``CERTIFY_RETRY_EVERY``-th call. The paths never depend on the strategy."""

    def __init__(self, transitions: np.ndarray, start: np.ndarray, end: np.ndarray,
                 strategy: str = "certified") -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        self.strategy = strategy
        self.trans = np.asarray(transitions, dtype=np.float32)
        self.start = np.asarray(start, dtype=np.float32)  # float32 throughout, as pytorch-crf computes
        self.end = np.asarray(end, dtype=np.float32)
        certified = strategy == "certified" and len(self.start) > 1
        self.bounds = run_bounds(self.trans, self.start, self.end) if certified else None
        self._refused = 0  # certificates that left most positions free, this many calls in a row
        self._calls = 0

    def decode(self, emissions: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """(batch, time) int64 best tags, 0 beyond each length (see viterbi_decode)."""
        emissions = np.asarray(emissions, dtype=np.float32)
        batch, time, ntags = emissions.shape
        lengths = np.asarray(lengths, dtype=np.int64)
        if batch == 0 or time == 0:
            return np.zeros((batch, time), dtype=np.int64)
        if lengths.min() < 1 or lengths.max() > time:
            raise ValueError("every sequence length must be between 1 and the time dimension")
        out = np.zeros((batch, time), dtype=np.int64)
        if len(self.start) < 2:  # one tag: the only path
            return out
        order = np.argsort(-lengths, kind="stable")  # longest first: see search_sorted
        lens = lengths[order]
        steps = int(lens[0])
        by_row = emissions[order][:, :steps]  # in two steps: numpy's gather-and-transpose in one is slower
        em = np.ascontiguousarray(by_row.transpose(1, 2, 0))  # (time, tags, rows)
        out[order, :steps] = self._certified(em, lens) if self.bounds is not None else self._reference(em, lens)
        return out

    def _reference(self, em: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """The plain dynamic programme over whole rows; (rows, time) tags."""
        return search_sorted(em, lens, self.trans, self.start[:, None], self.end[None, :])

    def _certified(self, em: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """Certified positions pinned, the islands between them searched; whole rows
        searched where the certificate would leave most positions free, or where no
        bound holds (infinite or NaN scores)."""
        assert self.bounds is not None
        free = None
        self._calls += 1
        if self._refused < CERTIFY_GIVE_UP or self._calls % CERTIFY_RETRY_EVERY == 0:
            margin = rounding_margin(em, self.trans, self.start, self.end)
            if np.isfinite(margin):
                tag, free = certified_path(em, lens, self.bounds, margin)
                if np.count_nonzero(free) >= FULL_SEARCH_SHARE * int(lens.sum()):
                    free = None
            self._refused = self._refused + 1 if free is None else 0
        if free is None:
            return self._reference(em, lens)
        ordered = np.ascontiguousarray(tag.T)
        if free.any():
            _search_islands(em, lens, free, ordered, self.trans, self.start, self.end)
        return ordered


class RunBounds(NamedTuple):
    """Per-edge bounds of what a deviation from the reference path gains, indexed by the
    reference's own tag pair ``p * ntags + q`` (p at t-1, q at t); float64.

    - ``enter[p, q]``: a run starting at t, entered from p: max over y != q of T[p, y], minus T[p, q].
    - ``inner[p, q]``: an edge inside a run: max over y != p, y' != q of T[y, y'], minus T[p, q].
    - ``leave[q, s]``: a run ending at t-1 (reference q there), left into s at t: max over
      y != q of T[y, s], minus T[q, s].
    - ``start[q]`` / ``end[q]``: a run that starts the sentence / ends it: max over y != q
      of start[y] (end[y]), minus start[q] (end[q]).
    """

    enter: np.ndarray
    inner: np.ndarray
    leave: np.ndarray
    start: np.ndarray
    end: np.ndarray


def run_bounds(trans: np.ndarray, start: np.ndarray, end: np.ndarray) -> RunBounds:
    """The :class:`RunBounds` of one CRF (at least two tags), in O(tags^2): every bound is
    a maximum that leaves out one row or one column, taken from the top two of each."""
    t = np.asarray(trans, dtype=np.float64)
    row_but = _max_but_own(t.T).T  # [p, q]: max over y != q of T[p, y]
    enter = row_but - t
    leave = _max_but_own(t) - t  # [q, s]: max over y != q of T[y, s]
    inner = _max_but_own(row_but) - t  # [p, q]: max over y != p of (max over y' != q of T[y, y'])

    def best_other(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        return _max_but_own(v[:, None])[:, 0] - v

    return RunBounds(enter.ravel(), inner.ravel(), leave.ravel(), best_other(start), best_other(end))


def _max_but_own(a: np.ndarray) -> np.ndarray:
    """``out[i, j]`` = max over rows k != i of ``a[k, j]`` (-inf for a single row): the
    column's maximum, or its second where row i holds the (first) maximum."""
    rows, cols = a.shape
    top = a.argmax(axis=0)
    best = a[top, np.arange(cols)]
    rest = a.copy()
    rest[top, np.arange(cols)] = -np.inf
    second = rest.max(axis=0)
    return np.where(np.arange(rows)[:, None] == top[None, :], second[None, :], best[None, :])


def rounding_margin(em: np.ndarray, trans: np.ndarray, start: np.ndarray, end: np.ndarray) -> float:
    """A score gap above the float32 rounding of any running score of the dynamic
    programme (the largest a path can reach), so that a position certified with it holds
    the tag the full search picks. Infinite or NaN when the scores are."""
    steps = em.shape[0]
    scale = steps * (max(float(em.max()), -float(em.min())) + float(np.abs(trans).max())) \
        + float(np.abs(start).max()) + float(np.abs(end).max())
    return 64 * scale * 2.0**-24


def top_two(em: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time, rows) best emission, its tag (the first if tied) and the best of the other
    tags (equal to the best where two tie), of (time, tags, rows) emissions: one pass per
    tag over (time, rows) blocks that stay in cache, no (time, tags, rows) temporaries."""
    steps, ntags, rows = em.shape
    best = em[:, 0, :].copy()
    second = np.full_like(best, -np.inf)
    tag = np.zeros(best.shape, dtype=np.intp)
    low, above = np.empty_like(best), np.empty(best.shape, dtype=bool)
    for y in range(1, ntags):
        x = em[:, y, :]
        np.minimum(best, x, out=low)
        np.maximum(second, low, out=second)
        np.greater(x, best, out=above)
        np.copyto(tag, y, where=above)
        np.maximum(best, x, out=best)
    return best, tag, second


def certified_path(em: np.ndarray, lens: np.ndarray, bounds: RunBounds, margin: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Positions whose tag on the best path is known without search.

    The reference path takes each position's top-emission tag a_t. Any other path
    differs from it on maximal runs of positions [i, j]; each run's score change depends
    on that run alone (its edges to the agreeing neighbours included), and in a best
    path every run gains >= 0 (else putting the reference back would score higher). A
    run's gain is at most ``enter_i + sum_{i<=t<=j} g_t + sum_{i<t<=j} inner_t +
    leave_j`` (:class:`RunBounds`, with the start and end scores at the sentence's
    edges), where ``g_t`` = the best other emission minus a_t's. With ``C`` the running
    sum of ``g + inner`` that is ``(enter_i + g_i - C_i) + (C_j + leave_j)``, so the best
    run through position t is the prefix maximum of the first term at t plus the suffix
    maximum of the second. A position no run can gain through (by more than ``margin``,
    above float32 rounding) holds a_t on the best path (any best path, and the one the
    full search picks).

    Args: ``em`` (time, tags, rows) with rows longest first, ``lens`` their lengths.
    Returns: (time, rows) reference tags (0 beyond each length) and the mask of valid
    positions left free.
    """
    steps, ntags, rows = em.shape
    best, tag, second = top_two(em)
    invalid = np.arange(steps)[:, None] >= lens[None, :]
    tag[invalid] = 0
    g = np.subtract(second, best, dtype=np.float64)  # <= 0
    pair = np.empty_like(tag)  # the reference's (t-1, t) tag pair, flat
    pair[0] = 0
    np.multiply(tag[:-1], ntags, out=pair[1:])
    pair[1:] += tag[1:]
    head = bounds.enter[pair]
    head[0] = bounds.start[tag[0]]
    tail = np.empty_like(head)
    tail[:-1] = bounds.leave[pair[1:]]
    tail[-1] = 0.0
    last, r = lens - 1, np.arange(rows)
    tail[last, r] = bounds.end[tag[last, r]]
    run = bounds.inner[pair]
    run[0] = 0.0
    run += g
    run[invalid] = 0.0
    cum = np.cumsum(run, axis=0)
    head += g
    head -= cum
    head[invalid] = -np.inf
    tail += cum
    tail[invalid] = -np.inf
    np.maximum.accumulate(head, axis=0, out=head)
    through = np.maximum.accumulate(tail[::-1], axis=0)[::-1]
    through += head
    free = through >= -margin
    free[invalid] = False
    return tag, free


def search_sorted(em: np.ndarray, lens: np.ndarray, trans: np.ndarray, start: np.ndarray,
                  end: np.ndarray) -> np.ndarray:
    """The dynamic programme over rows sorted longest first; (rows, time) tags, 0 beyond
    each length.

    ``em`` is (time, tags, rows); ``start`` is (tags, rows) or (tags, 1) and ``end``
    (rows, tags) or (1, tags), so that each row can have its own (an island's
    neighbours). Layout (time, tags, rows): each step is a few operations on contiguous
    (tags, running rows) blocks, and the max over the previous tag is a max over the
    FIRST axis, i.e. ntags - 1 elementwise maxima (vectorised), not a reduction over a
    short last axis. The rows still running at step t are the prefix [:n_at[t]], so
    finished rows cost nothing (and ``em`` is never read beyond that prefix). No
    backpointers are stored: the backward pass recomputes one (tags, rows) argmax per
    step from the kept scores, which gives the same choices (same float32 sums, first
    maximum) at 1/ntags the work.
    """
    steps, ntags, batch = em.shape
    n_at = np.count_nonzero(lens[None, :] > np.arange(steps)[:, None], axis=1)
    scores = np.empty((steps, ntags, batch), dtype=np.float32)  # best score ending in each tag
    scores[0] = start + em[0]
    trans3 = trans[:, :, None]  # (from, to, 1)
    for t in range(1, steps):
        n = n_at[t]
        # scores[t, j, b] = max_i (scores[t-1, i, b] + trans[i, j]) + em[t, j, b]
        np.add((scores[t - 1, :, None, :n] + trans3).max(axis=0), em[t, :, :n], out=scores[t, :, :n])
    tag = (scores[lens - 1, :, np.arange(batch)] + end).argmax(axis=1)  # each row's own last step
    ordered = np.zeros((batch, steps), dtype=np.int64)
    # walk back; a row's tag stays its best last tag until t reaches its own length
    for t in range(steps - 1, -1, -1):
        n = n_at[t]
        ordered[:n, t] = tag[:n]
        if t > 0:
            tag[:n] = (scores[t - 1, :, :n] + trans[:, tag[:n]]).argmax(axis=0)
    return ordered


def _search_islands(em: np.ndarray, lens: np.ndarray, free: np.ndarray, path: np.ndarray, trans: np.ndarray,
                    start: np.ndarray, end: np.ndarray) -> None:
    """Fill the free stretches of ``path`` (rows, time; pinned tags elsewhere) by the
    dynamic programme over each stretch alone, between its pinned neighbours (or the
    sentence's start and end). ``em``: the (time, tags, rows) emissions, same order."""
    rows, steps = path.shape
    flags = np.zeros((rows, steps + 1), dtype=np.int8)  # a 0 column keeps stretches inside their row
    flags[:, :steps] = free.T
    edges = np.diff(flags.ravel(), prepend=np.int8(0))
    first, stop = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    n = stop - first
    by_length = np.argsort(-n, kind="stable")  # longest first, as search_sorted needs
    first, n = first[by_length], n[by_length]
    row = first // (steps + 1)
    a = first - row * (steps + 1)
    b = a + n
    longest = int(n[0])
    island, k = expand_ranges(np.zeros(len(n), dtype=np.int64), n)  # every (island, step), flat
    r, t = row[island], a[island] + k  # ... and its (row, time) in the path
    # (island time, tags, islands), filled only where an island still runs: one flat gather
    # and one flat scatter (numpy's fancy indexing around a middle slice is slower)
    ntags, width = em.shape[1], em.shape[2]
    tag_k = np.arange(ntags)[:, None]
    island_em = np.empty((longest, ntags, len(n)), dtype=np.float32)
    island_em.ravel()[(k * (ntags * len(n)) + island)[None, :] + tag_k * len(n)] = \
        np.take(em.ravel(), (t * (ntags * width) + r)[None, :] + tag_k * width)
    left = path[row, np.maximum(a - 1, 0)]
    right = path[row, np.minimum(b, steps - 1)]
    from_left = trans.T[:, left]  # (tags, islands): the transitions out of the pinned left neighbour
    from_left[:, a == 0] = start[:, None]  # ... or the start scores
    to_right = trans.T[right]  # (islands, tags): the transitions into the pinned right neighbour
    to_right[b == lens[row]] = end  # ... or the end scores
    path[r, t] = search_sorted(island_em, n, trans, from_left, to_right)[island, k]  # (islands, island time)


def argmax_decode(logits: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Softmax heads: the best tag per position, 0 beyond each length."""
    best = np.asarray(logits).argmax(axis=-1).astype(np.int64)
    time = best.shape[1]
    best[np.arange(time)[None, :] >= np.asarray(lengths)[:, None]] = 0
    return best
