"""CRF Viterbi decoding in numpy, vectorised over the batch.

Same conventions as pytorch-crf: ``transitions[i, j]`` scores moving from tag i to
tag j; ``start``/``end`` score the first/last tag; the mask is a left-aligned prefix
(``lengths`` per sequence). The loop runs over time steps only, never over sequences,
and each step touches only the sequences still running.

Most positions of a confident model need no search: a tag whose emission beats every
other tag by more than any choice of neighbours could win back (:func:`pinned_tags`) is
on the best path whatever the rest of the sentence says. Those positions are pinned, and
only the free stretches between them ("islands") go through the dynamic programme, as
short sequences whose start and end scores are the transitions from and to their pinned
neighbours. Models whose transitions forbid much (large negative scores) pin little; a
sample of the time steps tells, and then whole rows are searched as before.
"""
from __future__ import annotations

import numpy as np

from nere.engine.core.featurize import expand_ranges

PIN_TAG_SHARE = 0.05  # test a tag for pinning when it is the top emission at >= this share of positions
PIN_SAMPLE = 7  # ... counted on every PIN_SAMPLE-th time step, where the pinning is also tried first
FULL_SEARCH_SHARE = 0.5  # search whole rows when this share of positions or more would stay free
PIN_GIVE_UP = 4  # a decoder whose samples refused pinning this many calls in a row ...
PIN_RETRY_EVERY = 16  # ... samples again only every PIN_RETRY_EVERY-th call



def viterbi_decode(
    emissions: np.ndarray,
    lengths: np.ndarray,
    transitions: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
) -> np.ndarray:
    """Best tag path per sequence.

    Args:
        emissions: (batch, time, tags) float scores.
        lengths: (batch,) valid lengths, each >= 1 and <= time.
        transitions, start, end: the CRF's parameters, (tags, tags), (tags,), (tags,).
    Returns:
        (batch, time) int64 tags; positions at or beyond a sequence's length are 0.
    """
    return CRFDecoder(transitions, start, end).decode(emissions, lengths)


class CRFDecoder:
    """Viterbi for one CRF's parameters, kept for many calls (the engine's): the pinning
    bounds are computed once, and a model whose samples keep refusing pinning (its
    transitions forbid much) stops paying for the sample after ``PIN_GIVE_UP`` refusals,
    except every ``PIN_RETRY_EVERY``-th call. The paths never depend on that choice."""

    def __init__(self, transitions: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
        self.trans = np.asarray(transitions, dtype=np.float32)
        self.start = np.asarray(start, dtype=np.float32)  # float32 throughout, as pytorch-crf computes
        self.end = np.asarray(end, dtype=np.float32)
        self.gain = pin_gain(self.trans, self.start, self.end)
        self._refused = 0  # pinning refused by this many calls in a row
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
        trans, start, end = self.trans, self.start, self.end
        order = np.argsort(-lengths, kind="stable")  # longest first: see search_sorted
        lens = lengths[order]
        steps = int(lens[0])
        by_row = emissions[order][:, :steps]  # in two steps: numpy's gather-and-transpose in one is ~7x slower
        em = np.ascontiguousarray(by_row.transpose(1, 2, 0))  # (time, tags, rows)
        self._calls += 1
        pinned = None
        if self._refused < PIN_GIVE_UP or self._calls % PIN_RETRY_EVERY == 0:
            pinned = pinned_tags(em, lens, self.gain, trans, start, end)
            self._refused = self._refused + 1 if pinned is None else 0
        if pinned is None or np.count_nonzero(pinned[1]) >= FULL_SEARCH_SHARE * int(lens.sum()):
            ordered = search_sorted(em, lens, trans, start[:, None], end[None, :])
        else:
            ordered = np.ascontiguousarray(pinned[0].T)
            if pinned[1].any():
                _search_islands(em, lens, pinned[1], ordered, trans, start, end)
        out = np.zeros((batch, time), dtype=np.int64)
        out[order, :steps] = ordered
        return out


def pin_gain(trans: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """(tags, tags): the most that neighbours can win back when one position's tag y is
    changed to y' (``gain[y, y']``; -inf on the diagonal), see :func:`pinned_tags`."""
    into = np.vstack([trans, start[None, :]])  # (predecessor or start, tag)
    out_of = np.hstack([trans, end[:, None]])  # (tag, successor or end)
    gain = (into[:, None, :] - into[:, :, None]).max(axis=0) + (out_of[None, :, :] - out_of[:, None, :]).max(axis=2)
    np.fill_diagonal(gain, -np.inf)
    return gain.astype(np.float32)


def pinned_tags(em: np.ndarray, lens: np.ndarray, gain: np.ndarray, trans: np.ndarray, start: np.ndarray,
                end: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Positions whose tag on the best path is known without search.

    Changing the tag at one position from y to y' changes the path's score by
    ``em[y'] - em[y]`` plus the two transitions that touch it, and those gain at most
    ``gain[y, y']`` (:func:`pin_gain`) = max over predecessors (or start) of the incoming difference + max
    over successors (or end) of the outgoing one. So where ``em[y] - em[y'] > gain[y,
    y']`` for every y' != y, every path through y' is beaten by the same path through y:
    y is on the best path (at most one tag can pass, since ``gain[y, z] + gain[z, y] >=
    0``). The test asks for a margin above float32 rounding of the running scores, so a
    pinned tag is the one the full search picks. Only tags that are often the top
    emission are tested (each test is a pass over the emissions), and only when a sample
    of the time steps says enough positions pass for pinning to pay.

    Args: ``em`` (time, tags, rows) with rows longest first, ``lens`` their lengths,
    ``gain`` from :func:`pin_gain`.
    Returns: (time, rows) pinned tags (0 elsewhere) and the (time, rows) mask of valid
    positions left free; None when too few positions would be pinned.
    """
    steps, ntags, rows = em.shape
    valid = np.arange(steps)[:, None] < lens[None, :]

    def rounding(x: np.ndarray) -> np.float32:
        """Above float32 rounding of any running score (the largest a path can reach)."""
        scale = steps * (max(float(x.max()), -float(x.min())) + float(np.abs(trans).max())) \
            + float(np.abs(start).max()) + float(np.abs(end).max())
        return np.float32(64 * scale * 2.0**-24)

    def passing(x: np.ndarray, y: int, margin: np.float32) -> np.ndarray:
        rival = (x + gain[y][None, :, None]).max(axis=1)  # the best other tag, with what it can win back
        return rival < x[:, y, :] - margin

    # the sample decides whether to try (its own rounding bound is enough for that)
    sample, sample_valid = em[::PIN_SAMPLE], valid[::PIN_SAMPLE]
    top = sample.max(axis=1)
    best = ((sample == top[:, None, :]) * np.arange(ntags, dtype=np.int16)[None, :, None]).max(axis=1)  # a top tag
    counts = np.bincount(best[sample_valid], minlength=ntags)
    tested = np.flatnonzero(counts >= PIN_TAG_SHARE * counts.sum())
    margin = rounding(sample)
    sampled = sum(int(np.count_nonzero(passing(sample, int(y), margin) & sample_valid)) for y in tested)
    if sampled <= (1 - FULL_SEARCH_SHARE) * counts.sum():
        return None
    margin = rounding(em)
    tag = np.zeros((steps, rows), dtype=np.int64)
    free = valid.copy()
    for y in tested:
        here = passing(em, int(y), margin) & valid
        tag[here] = y
        free &= ~here
    _pin_tops(em, gain, margin, tag, free)
    return tag, free


def _pin_tops(em: np.ndarray, gain: np.ndarray, margin: np.float32, tag: np.ndarray, free: np.ndarray) -> None:
    """Pin more of the free positions (``tag``/``free`` updated in place): each is tested
    for its own top emission against every other tag, the test of :func:`pinned_tags`.
    The frequent tags' passes test every position for one tag each; a rarer tag (an
    entity's) is top at too few positions to pay for a pass of its own, but gathered,
    the free positions are few: (tags, positions) columns, reduced over the first axis."""
    t_i, r_i = np.nonzero(free)
    if not len(t_i):
        return
    steps, ntags, rows = em.shape
    at = (t_i * (ntags * rows) + r_i)[None, :] + (np.arange(ntags) * rows)[:, None]
    x = np.take(em.ravel(), at)  # (tags, free positions): one flat gather
    best = x.max(axis=0)
    top = ((x == best) * np.arange(ntags, dtype=np.int16)[:, None]).max(axis=0)  # a top tag (argmax over axis 0 is slow)
    rival = (x + np.take(gain.T, top, axis=1)).max(axis=0)  # gain[top, y'] beside em[y']; -inf at y' = top
    here = rival < best - margin
    tag[t_i[here], r_i[here]] = top[here]
    free[t_i[here], r_i[here]] = False


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
    # and one flat scatter (numpy's fancy indexing around a middle slice is ~4x slower)
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
