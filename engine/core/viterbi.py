"""CRF Viterbi decoding in numpy, vectorised over the batch.

Same conventions as pytorch-crf: ``transitions[i, j]`` scores moving from tag i to
tag j; ``start``/``end`` score the first/last tag; the mask is a left-aligned prefix
(``lengths`` per sequence). The loop runs over time steps only, never over sequences.
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
    trans = np.asarray(transitions, dtype=np.float32)
    start = np.asarray(start, dtype=np.float32)  # float32 throughout, as pytorch-crf computes
    end = np.asarray(end, dtype=np.float32)
    score = start[None, :] + emissions[:, 0]  # (B, K)
    history = np.empty((max(time - 1, 0), batch, ntags), dtype=np.int32)
    for t in range(1, time):
        # cand[b, i, j] = score[b, i] + trans[i, j]
        cand = score[:, :, None] + trans[None, :, :]
        best_prev = cand.argmax(axis=1)  # (B, K)
        best = np.take_along_axis(cand, best_prev[:, None, :], axis=1)[:, 0, :]
        new_score = best + emissions[:, t]
        active = (t < lengths)[:, None]
        score = np.where(active, new_score, score)
        history[t - 1] = best_prev
    score = score + end[None, :]
    out = np.zeros((batch, time), dtype=np.int64)
    last = score.argmax(axis=1)
    rows = np.arange(batch)
    # walk back; a sequence only starts following pointers below its own length
    tag = last.copy()
    for t in range(time - 1, -1, -1):
        here = t < lengths
        is_last = t == lengths - 1
        tag = np.where(is_last, last, tag)
        out[:, t] = np.where(here, tag, 0)
        if t > 0:
            prev = history[t - 1][rows, tag]
            tag = np.where(here & (t >= 1), prev, tag)
    return out


def argmax_decode(logits: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Softmax heads: the best tag per position, 0 beyond each length."""
    best = np.asarray(logits).argmax(axis=-1).astype(np.int64)
    time = best.shape[1]
    best[np.arange(time)[None, :] >= np.asarray(lengths)[:, None]] = 0
    return best
