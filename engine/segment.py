"""Documents -> checked text -> sentences -> token windows, character offsets kept.

Sentence boundaries come from :func:`nere.engine.core.sentences.sentence_spans` (the same
rule training data is cut with), with English full stops on and, by default, every line
break ending a sentence (``line_breaks="join"`` for text wrapped mid-sentence). A sentence longer than the
model's window is cut into overlapping token windows; entities found in several windows
are merged by :func:`merge_windows`, so nothing is silently truncated.
"""
from __future__ import annotations

import bisect
import re
from typing import Any, Sequence

import numpy as np

from nere.engine.core.featurize import window_starts
from nere.engine.core.sentences import LINE_BREAK_MODES, sentence_spans
from nere.engine.errors import EngineError

DEFAULT_MAX_DOC_CHARS = 1_000_000
DEFAULT_LINE_BREAKS = "split"  # a line break ends a sentence; "join": lines wrapped mid-sentence
# C0/C1 controls except tab/newline/carriage return, lone surrogates, non-characters.
# Replaced one-for-one by a space so that every offset still points into the input text.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_ASCII_KEPT = b"\t\n\r" + bytes(range(0x20, 0x7F))  # the ASCII characters _CONTROL leaves alone


def check_text(value: Any, max_chars: int = DEFAULT_MAX_DOC_CHARS) -> tuple[str | None, str | None, bool]:
    """A row's text made safe to process: (text, failure reason, control chars replaced).

    Bad rows never raise: the reason is reported and the run goes on.
    """
    if value is None:
        return None, "null text", False
    if not isinstance(value, str):
        return None, f"text is not a string ({type(value).__name__})", False
    if not value:
        return None, "empty text", False
    if len(value) > max_chars:
        return None, f"text too long ({len(value)} chars > max_doc_chars {max_chars})", False
    cleaned = False
    if _has_control(value):
        value, cleaned = _CONTROL.sub(" ", value), True
    if value.isspace():
        return None, ("only control characters" if cleaned else "blank text"), cleaned
    return value, None, cleaned


def _has_control(text: str) -> bool:
    """``_CONTROL.search(text)``, for ASCII text as one byte deletion (~10x faster)."""
    if text.isascii():
        return bool(text.encode("ascii").translate(None, _ASCII_KEPT))  # what is left is a control character
    return _CONTROL.search(text) is not None


def check_texts(values: Sequence[Any], max_chars: int = DEFAULT_MAX_DOC_CHARS
                ) -> tuple[list[str | None], list[tuple[int, str]], int]:
    """:func:`check_text` of every row of a unit: (texts, None for a failed row; (row,
    reason) of each failure, in row order; rows whose control characters were replaced).
    The usual unit (all strings, none empty, blank or too long, no control character) is
    recognised in a few C-level passes over the whole unit and comes back as it is; any
    other unit is checked row by row."""
    values = list(values)  # a copy: the caller may blank rows of it
    try:
        joined = "".join(values)  # TypeError for a None or any other non-string row
    except TypeError:
        joined = None
    if (joined is not None and values and min(map(len, values)) > 0 and max(map(len, values)) <= max_chars
            and not any(map(str.isspace, values)) and not _has_control(joined)):
        return values, [], 0
    texts: list[str | None] = []
    failures: list[tuple[int, str]] = []
    cleaned = 0
    for i, value in enumerate(values):
        text, why, was_cleaned = check_text(value, max_chars)
        texts.append(text)
        cleaned += was_cleaned
        if why is not None:
            failures.append((i, why))
    return texts, failures, cleaned


def check_line_breaks(line_breaks: str) -> str:
    """``line_breaks`` if it is a known mode, else a one-line EngineError."""
    if line_breaks not in LINE_BREAK_MODES:
        raise EngineError(f"line_breaks must be one of {', '.join(LINE_BREAK_MODES)}, got {line_breaks!r}")
    return line_breaks


def split_sentences(text: str, line_breaks: str = DEFAULT_LINE_BREAKS) -> list[tuple[int, int]]:
    """Sentence spans of a document (Chinese and English ends, trimmed, offsets exact).
    ``line_breaks``: "split" (each line break ends a sentence) or "join" (lines wrapped
    mid-sentence: a break is a space)."""
    return sentence_spans(text, periods=True, line_breaks=check_line_breaks(line_breaks))


def overlap_for(max_content: int) -> int:
    """Tokens shared by neighbouring windows: a quarter of a window (entities rarely
    exceed it, so each entity lies whole and away from the edge in some window)."""
    return max_content // 4


def window_plan(n_tokens: int, max_content: int) -> list[int]:
    """Token starts of the windows covering a sentence of ``n_tokens`` tokens."""
    stride = max(1, max_content - overlap_for(max_content))
    return window_starts(n_tokens, max_content, stride)


# A candidate found in one window: (start, end, label, score, edge distance), token
# positions in sentence coordinates. Edge distance = tokens between the span and the
# nearer window edge that cuts the sentence; a span cut by an edge has distance 0.
Candidate = tuple[int, int, str, float, int]


def edge_distance(start, end, win_start, win_end, n_tokens):
    """Tokens of context between a span and the nearest window edge inside the sentence
    (the sentence's own start and end are not cuts: ``n_tokens`` there). Works on ints
    and, element-wise, on numpy arrays."""
    left = np.where(win_start > 0, start - win_start, n_tokens)
    right = np.where(win_end < n_tokens, win_end - end, n_tokens)
    return np.minimum(left, right)


def merge_windows(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Non-overlapping spans from overlapping windows, in sentence order.

    Identical spans collapse into one; when windows disagree, the span that lies
    farther from its window's edge wins (the model saw more context around it), then
    the longer one (an edge cuts entities short), then the earlier one.
    """
    ranked = sorted(candidates, key=lambda c: (-c[4], -(c[1] - c[0]), c[0], c[2]))
    starts: list[int] = []  # taken spans, kept sorted and disjoint: check neighbours only
    taken: list[Candidate] = []
    for c in ranked:
        i = bisect.bisect_left(starts, c[0])
        if (i > 0 and taken[i - 1][1] > c[0]) or (i < len(taken) and taken[i][0] < c[1]):
            continue
        starts.insert(i, c[0])
        taken.insert(i, c)
    return taken
