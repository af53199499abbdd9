"""CRF Viterbi decoding in numpy, vectorised over the batch.

Same conventions as pytorch-crf: ``transitions[i, j]`` scores moving from tag i to
tag j; ``start``/``end`` score the first/last tag; the mask is a left-aligned prefix
(``lengths`` per sequence). The loop runs over time steps only, never over sequences,
and each step touches only the sequences still running.
"""
from __future__ import annotations

import numpy as np


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
    emissions = np.asarray(emissions, dtype=np.float32)
    batch, time, ntags = emissions.shape
    lengths = np.asarray(lengths, dtype=np.int64)
    if batch == 0 or time == 0:
        return np.zeros((batch, time), dtype=np.int64)
    if lengths.min() < 1 or lengths.max() > time:
        raise ValueError("every sequence length must be between 1 and the time dimension")
    # Layout (time, tags, rows): each step is a few operations on contiguous
    # (tags, running rows) blocks, and the max over the previous tag is a max over the
    # FIRST axis, i.e. ntags - 1 elementwise maxima (vectorised), not a reduction over a
    # short last axis. Rows are ordered longest first, so the rows still running at step t
    # are the prefix [:n_at[t]] and finished rows cost nothing. No backpointers are stored:
    # the backward pass recomputes one (tags, rows) argmax per step from the kept scores,
    # which gives the same choices (same float32 sums, first maximum) at 1/ntags the work.
    trans = np.asarray(transitions, dtype=np.float32)
    start = np.asarray(start, dtype=np.float32)  # float32 throughout, as pytorch-crf computes
    end = np.asarray(end, dtype=np.float32)
    order = np.argsort(-lengths, kind="stable")
    lens = lengths[order]
    steps = int(lens[0])
    em = np.ascontiguousarray(emissions[order, :steps].transpose(1, 2, 0))
    n_at = np.count_nonzero(lens[None, :] > np.arange(steps)[:, None], axis=1)
    scores = np.empty((steps, ntags, batch), dtype=np.float32)  # best score ending in each tag
    scores[0] = start[:, None] + em[0]
    trans3 = trans[:, :, None]  # (from, to, 1)
    for t in range(1, steps):
        n = n_at[t]
        # scores[t, j, b] = max_i (scores[t-1, i, b] + trans[i, j]) + em[t, j, b]
        np.add((scores[t - 1, :, None, :n] + trans3).max(axis=0), em[t, :, :n], out=scores[t, :, :n])
    tag = (scores[lens - 1, :, np.arange(batch)] + end[None, :]).argmax(axis=1)  # each row's own last step
    ordered = np.zeros((batch, time), dtype=np.int64)
    # walk back; a row's tag stays its best last tag until t reaches its own length
    for t in range(steps - 1, -1, -1):
        n = n_at[t]
        ordered[:n, t] = tag[:n]
        if t > 0:
            tag[:n] = (scores[t - 1, :, :n] + trans[:, tag[:n]]).argmax(axis=0)
    out = np.empty_like(ordered)
    out[order] = ordered
    return out


def argmax_decode(logits: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Softmax heads: the best tag per position, 0 beyond each length."""
    best = np.asarray(logits).argmax(axis=-1).astype(np.int64)
    time = best.shape[1]
    best[np.arange(time)[None, :] >= np.asarray(lengths)[:, None]] = 0
    return best
