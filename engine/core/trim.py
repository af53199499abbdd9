"""Entity spans cut to what a name starts and ends with. One rule for evaluation and the engine.

A decoded character span of a text is, in this order:

1. cut at line breaks (``\\n``, ``\\r``, U+2028, U+2029): no entity crosses one. Of the
   pieces the longest after steps 2-3 is kept (the first of equally long ones), so a
   span stays one entity and a relation found for it still has one entity to point to.
2. stripped of whitespace at both ends (any Unicode space: U+3000, U+00A0, U+2002-U+200A,
   tabs, ...). Inner spaces stay: a Chinese name written with spacing, ``魏　铭``, is one
   entity whose offsets slice the text as it is.
3. stripped of punctuation at either end, one character at a time, until neither end
   changes. Punctuation is Unicode category P*, except ``# @ & % * / \\ §`` (parts of
   handles, company names, amounts). It stays when
   - it is an opening bracket or quote whose closer lies inside the span, or a closer
     whose opener does (``Acme (Pty)``, ``“Dream” Inc``); a pair that encloses the
     whole span goes as a pair (``(AP)`` -> ``AP``, ``《人民日报》`` -> ``人民日报``);
   - it is a final ``.`` of an abbreviation: an initialism (single letters, each followed
     by ``.``: ``U.S.``, ``N.Y.``, ``a.m.``) or a word of :data:`ABBREVIATIONS`
     (``Corp.``, ``Calif.``, ``Jr.``, ``St.``), also when tokenized text puts a space
     before it (``Calif .``). Such a word keeps its period at the end of a sentence too,
     where one period serves both (``works for Acme Corp.`` -> ``Acme Corp.``); any other
     final period goes (``born in Austin.`` -> ``Austin``), and so does a second one
     (``U.S..`` -> ``U.S.``).
   A leading possessive or contraction ending goes with its apostrophe
   (``'s National Press`` -> ``National Press``).
4. dropped when nothing is left (a span of punctuation or spaces only).

Symbols are never trimmed (``$100`` stays).
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

LINE_BREAKS = "\n\r\u2028\u2029"
_BREAK = re.compile(f"[{LINE_BREAKS}]")
_NOT_TRIMMED = frozenset("#@&%*/\\§")
# opener -> closer; '"' and "'" close themselves
PAIRS = {
    "(": ")", "[": "]", "{": "}", "（": "）", "［": "］", "｛": "｝", "“": "”", "‘": "’", "«": "»", "‹": "›",
    "「": "」", "『": "』", "《": "》", "〈": "〉", "【": "】", "〔": "〕", "`": "'", '"': '"', "'": "'",
}
_OPENER_OF = {close: open_ for open_, close in PAIRS.items() if open_ != close}
ABBREVIATIONS = frozenset(
    # titles and name suffixes
    "mr mrs ms messrs dr prof rev fr hon pres gen gov sen rep lt col sgt capt cmdr adm maj cpl jr sr "
    # companies and bodies
    "corp inc co ltd bros assn dept univ inst intl natl mfg "
    # places and addresses
    "st mt ft ave blvd rd "
    # US states (AP style)
    "ala ariz ark calif colo conn del fla ga ill ind kan ky la md mass mich minn miss mo mont neb nev "
    "okla ore pa penn tenn tex va vt wash wis wyo "
    # months, numbers
    "jan feb mar apr jun jul aug sep sept oct nov dec no vs".split()
)
_INITIALISM = re.compile(r"(?:[^\W\d_]\.)+")
# the last word before a final '.': letters, or letters joined by '.' ("U.S", "a.m"); group 2
# is a period of its own (then the final one is another, the sentence's); spaces may come
# before the final '.' (tokenized text writes "Calif ." and "N.J .")
_FINAL_WORD = re.compile(r"([^\W\d_]+(?:\.[^\W\d_]+)*)(\.?)\s*\.$")
# a possessive or contracted ending left at the start of a span ("'s National Press")
_LEADING_CLITIC = re.compile(r"['’](?:s|d|ll|re|ve|m|t)\s", re.IGNORECASE)
_WORD_WINDOW = 24  # characters before a final '.' in which its word is looked for


@lru_cache(maxsize=4096)
def is_edge(ch: str) -> bool:
    """True for a character that may be trimmed off an end: whitespace or punctuation."""
    return ch.isspace() or (unicodedata.category(ch)[0] == "P" and ch not in _NOT_TRIMMED)


def _abbreviation_period(piece: str) -> bool:
    """``piece`` (ending in '.') ends with an initialism or a listed abbreviation."""
    m = _FINAL_WORD.search(piece[-_WORD_WINDOW:])
    if m is None or m.group(2):
        return False
    word = m.group(1)
    if _INITIALISM.fullmatch(word + "."):
        return True
    return "." not in word and word.lower() in ABBREVIATIONS


def _encloses(piece: str) -> bool:
    """The first and last characters are a bracket or quote pair around the whole span:
    the opener's closer is found only at the end (nesting of the same pair counted)."""
    opener = piece[0]
    closer = PAIRS.get(opener)
    if closer is None or piece[-1] != closer or len(piece) < 2:
        return False
    if opener == closer:
        return closer not in piece[1:-1]
    depth = 0
    for k, ch in enumerate(piece):
        if ch == opener:
            depth += 1
        elif ch == closer:
            depth -= 1
            if depth == 0:
                return k == len(piece) - 1
    return False


def _trim_line(text: str, start: int, end: int) -> tuple[int, int] | None:
    """Steps 2-4 for a span without line breaks."""
    s, e = start, end
    while True:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if s >= e:
            return None
        piece = text[s:e]
        first, last = piece[0], piece[-1]
        if not (is_edge(first) or is_edge(last)):
            return s, e
        if e - s >= 2 and _encloses(piece):
            s, e = s + 1, e - 1
            continue
        if is_edge(first) and not (first in PAIRS and PAIRS[first] in piece[1:]):
            clitic = _LEADING_CLITIC.match(piece)
            s += clitic.end() if clitic else 1
            continue
        if is_edge(last) and not (
            (last == "." and _abbreviation_period(piece))
            or ((last in _OPENER_OF or PAIRS.get(last) == last) and _OPENER_OF.get(last, last) in piece[:-1])
        ):
            e -= 1
            continue
        return s, e


def trim_span(text: str, start: int, end: int) -> tuple[int, int] | None:
    """``text[start:end]`` trimmed by the module's rule: (start, end), or None to drop it."""
    piece = text[start:end]
    if not _BREAK.search(piece):
        return _trim_line(text, start, end)
    best: tuple[int, int] | None = None
    s = start
    for m in _BREAK.finditer(piece):
        cut = _trim_line(text, s, start + m.start())
        if cut is not None and (best is None or cut[1] - cut[0] > best[1] - best[0]):
            best = cut
        s = start + m.end()
    cut = _trim_line(text, s, end)
    if cut is not None and (best is None or cut[1] - cut[0] > best[1] - best[0]):
        best = cut
    return best


def needs_trim(piece: str) -> bool:
    """Whether :func:`trim_span` could change a span of this text (a cheap test first)."""
    return is_edge(piece[0]) or is_edge(piece[-1]) or _BREAK.search(piece) is not None


def trim_spans(text: str, spans: Iterable[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """(start, end, label) spans of ``text`` trimmed; spans left empty are dropped."""
    out = []
    for s, e, label in spans:
        cut = trim_span(text, s, e) if e > s and needs_trim(text[s:e]) else (s, e)
        if cut is not None:
            out.append((cut[0], cut[1], label))
    return out


def trim_entity_spans(texts: Sequence[str], docs: np.ndarray, starts: np.ndarray, ends: np.ndarray
                      ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Many entities' spans (``docs[k]`` indexes ``texts``) trimmed: (indices of the
    entities kept, or None when all are; their starts; their ends). A span is looked at
    in Python only when its first or last character could be trimmed or it holds a break."""
    d, s, e = docs.tolist(), starts.tolist(), ends.tolist()
    odd = [k for k in range(len(d)) if needs_trim(texts[d[k]][s[k]:e[k]])]
    if not odd:
        return None, starts, ends
    starts, ends = starts.copy(), ends.copy()
    keep = np.ones(len(d), dtype=bool)
    for k in odd:
        cut = trim_span(texts[d[k]], s[k], e[k])
        if cut is None:
            keep[k] = False
        else:
            starts[k], ends[k] = cut
    if keep.all():
        return None, starts, ends
    kept = np.flatnonzero(keep)
    return kept, starts[kept], ends[kept]
