"""Sentence boundaries in character offsets (Chinese and ASCII sentence ends).

One rule for training data (SanWen loader) and the engine's segmenter, so a model sees
at inference the same kind of sentence it was trained on.

A sentence ends after a run of end marks (。！？!?; ；; only when asked), followed by any
closing quotes/brackets (”’」』）)】》; ASCII quotes are left alone since they
also open sentences). Leading/trailing whitespace (U+3000 and every other Unicode space
included) is trimmed off each span; empty spans vanish.

Line breaks (``\n``, ``\r``, U+2028, U+2029), by ``line_breaks``:
- ``"split"``: every line break ends a sentence. Documents laid out in lines (headings,
  party lists and signature blocks of court judgments) keep each line apart, so no
  sentence, and no entity, runs from one line into the next. The engine's default.
- ``"join"``: a line break is a space inside the sentence, for hard-wrapped texts that
  break lines mid-sentence (SanWen); the break stays inside the span, offsets exact.
  The default here, since training data (SanWen) is cut this way.

Semicolons join clauses of one sentence; not splitting on them keeps ~1% more of
SanWen's relations inside a sentence (10,941 vs 10,846 in train), hence the default.

English full stops (``periods=True``, the engine's setting): a run of '.' (with any end
marks, closers or ASCII quotes after it) ends a sentence only when whitespace or the end
of the text follows, so "3.5" and "e.g.," stay whole; and not after an initial ("J.",
"U.S."), a title or month ("Mr.", "Rev.", "Dec."), nor when what follows starts in lower
case, with a digit or with , ; : ) ("Calif. , to", "No. 5").

The scan is a regular expression over the text (one Python step per sentence, not per
character): the engine runs it over whole corpora.
"""
from __future__ import annotations

import re
from functools import lru_cache

LINE_BREAK_MODES = ("split", "join")
_LINE = re.compile("[^\n\r\u2028\u2029]+")  # a line: the text between line breaks
_HAS_BREAK = re.compile("[\n\r\u2028\u2029]")
END_MARKS = frozenset("。！？!?")
CLAUSE_MARKS = frozenset("；;")
CLOSERS = frozenset("”’」』）)】》")
TITLES = frozenset(
    "mr mrs ms messrs dr prof rev fr hon pres st jr sr gen gov sen rep lt col sgt capt mt no vs "
    "jan feb mar apr jun jul aug sep sept oct nov dec".split()
)

_WORD_BEFORE = re.compile(r"\W*(\w+)")  # matched in the REVERSED text: the last word before a point
_HOLD_NEXT = frozenset(",;:)")
_WINDOW = 12  # characters before a '.' in which its word is looked for


def _chars(chars) -> str:
    return "".join(re.escape(c) for c in sorted(chars))


@lru_cache(maxsize=None)
def _ends(semicolons: bool, periods: bool) -> re.Pattern:
    """A run of end marks, or (``periods``) a run led by '.' before whitespace or the end,
    then the whitespace after it. Group 1 is the run; for a '.' run, group 2 is the next
    non-space character (None at the end of the text).

    Every match starts with one character of a single class, and the two kinds of run
    part by a lookbehind at that character: with one leading class, ``re`` skips to the
    next candidate character at C speed instead of trying each alternative at every
    position (2x faster over English text). The trailing whitespace cannot start a
    match, so consuming it changes no match; it gives the next sentence's start."""
    enders = _chars(END_MARKS | CLAUSE_MARKS if semicolons else END_MARKS)
    closers = _chars(CLOSERS)
    if not periods:
        return re.compile(f"([{enders}][{enders}{closers}]*)\\s*")
    return re.compile(f"([{enders}.](?:(?<=[{enders}])[{enders}{closers}.]*"
                      f"|(?<=\\.)[{enders}{closers}.\"']*(?=\\s|$)(?=\\s*(\\S)|\\s*$)))\\s*")


def _period_holds(text: str, start: int, following: str | None, reverse: str) -> bool:
    """True when the '.' at ``start`` does not end a sentence (initial, title, lower case).
    ``following`` is the next non-space character after the run (None at the end);
    ``reverse`` is ``text[::-1]``: the word before the point (within ``_WINDOW``
    characters, cut at the window's edge) is one anchored match there instead of a
    search through the window."""
    if following is not None and (following.islower() or following.isdigit() or following in _HOLD_NEXT):
        return True
    n = len(text)
    before = _WORD_BEFORE.match(reverse, n - start, n - start + _WINDOW if start > _WINDOW else n)
    if before:
        word = before.group(1)
        return (len(word) == 1 and word.isalpha()) or word[::-1].lower() in TITLES
    return False


def sentence_spans(text: str, semicolons: bool = False, periods: bool = False,
                   line_breaks: str = "join") -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences of ``text``, in order, trimmed.
    ``line_breaks``: "split" (a line break ends a sentence) or "join" (it does not)."""
    if line_breaks not in LINE_BREAK_MODES:
        raise ValueError(f"line_breaks must be one of {', '.join(LINE_BREAK_MODES)}, got {line_breaks!r}")
    if line_breaks == "join" or not _HAS_BREAK.search(text):
        return _line_spans(text, semicolons, periods)
    spans: list[tuple[int, int]] = []
    for m in _LINE.finditer(text):
        base = m.start()
        spans.extend((base + s, base + e) for s, e in _line_spans(m.group(), semicolons, periods))
    return spans


def _line_spans(text: str, semicolons: bool, periods: bool) -> list[tuple[int, int]]:
    """:func:`sentence_spans` with line breaks joined (whitespace like any other)."""
    spans: list[tuple[int, int]] = []
    n = len(text)
    start = 0
    while start < n and text[start].isspace():
        start += 1
    reverse = None
    for m in _ends(semicolons, periods).finditer(text):
        s = m.start()
        if periods and text[s] == ".":
            if reverse is None:
                reverse = text[::-1]
            if _period_holds(text, s, m.group(2), reverse):
                continue
        # start is at a non-space character and the span ends with the run: nothing to trim
        spans.append((start, m.end(1)))
        start = m.end()
    end = n
    while end > start and text[end - 1].isspace():
        end -= 1
    if start < end:
        spans.append((start, end))
    return spans
