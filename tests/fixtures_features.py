"""Shared test data for the extra per-token inputs (bigrams, lexicon)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable


def write_substring_lexicon(folder: Path, texts: Iterable[str]) -> Path:
    """A small 'word freq' dictionary: every 2-3 character substring of ``texts``."""
    words = {t[i : i + n] for t in texts for n in (2, 3) for i in range(len(t) - n + 1)}
    path = folder / "dict.txt"
    path.write_text("\n".join(f"{w} {len(w) * 7 + i % 5} n" for i, w in enumerate(sorted(words))), encoding="utf-8")
    return path
