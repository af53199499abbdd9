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
    # candidates are laid out (row, to, from) so each step's argmax runs over the
    # contiguous last axis; rows are ordered longest first so the rows still running at
    # step t are the prefix [:n_at[t]] and finished rows cost nothing
    trans_t = np.ascontiguousarray(np.asarray(transitions, dtype=np.float32).T)
    start = np.asarray(start, dtype=np.float32)  # float32 throughout, as pytorch-crf computes
    end = np.asarray(end, dtype=np.float32)
    order = np.argsort(-lengths, kind="stable")
    lens = lengths[order]
    em = emissions[order]
    steps = int(lens[0])
    n_at = np.count_nonzero(lens[None, :] > np.arange(steps)[:, None], axis=1)
    score = start[None, :] + em[:, 0]  # (B, K)
    history = np.empty((max(steps - 1, 0), batch, ntags), dtype=np.intp)
    pick = np.arange(batch * ntags) * ntags  # flat index of each (row, to) candidate block
    for t in range(1, steps):
        n = n_at[t]
        cand = score[:n, None, :] + trans_t  # cand[b, j, i] = score[b, i] + trans[i, j]
        best_prev = cand.argmax(axis=2)
        history[t - 1, :n] = best_prev
        score[:n] = cand.ravel()[pick[: n * ntags] + best_prev.ravel()].reshape(n, ntags) + em[:n, t]
    tag = (score + end[None, :]).argmax(axis=1)
    ordered = np.zeros((batch, time), dtype=np.int64)
    rows = np.arange(batch)
    # walk back; a row's tag stays its best last tag until t reaches its own length
    for t in range(steps - 1, -1, -1):
        n = n_at[t]
        ordered[:n, t] = tag[:n]
        if t > 0:
            tag[:n] = history[t - 1, rows[:n], tag[:n]]
    out = np.empty_like(ordered)
    out[order] = ordered
    return out


def argmax_decode(logits: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Softmax heads: the best tag per position, 0 beyond each length."""
    best = np.asarray(logits).argmax(axis=-1).astype(np.int64)
    time = best.shape[1]
    best[np.arange(time)[None, :] >= np.asarray(lengths)[:, None]] = 0
    return best
