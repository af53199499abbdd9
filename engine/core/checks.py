"""Diagnostics of predicted entity spans against gold, as a reader of the output sees them.

Two jobs, both pure Python over ``(start, end, label)`` spans with the document text:
``user_checks`` counts the mistakes a user notices first (a name cut to its surname, an
entity running across a line break, a span made of or edged by punctuation);
``error_breakdown`` sorts every strict-F1 error into missed / spurious / boundary / type
and scores by entity length, for error analysis.
"""
from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from nere.engine.core.metrics import Span, prf

PERSON_LABELS = frozenset({"PER", "Peop", "Person"})
LENGTH_BUCKETS: tuple[tuple[str, int, int], ...] = (
    ("1", 1, 1), ("2", 2, 2), ("3", 3, 3), ("4", 4, 4), ("5-6", 5, 6), ("7+", 7, 10**9),
)


def is_punct_or_space(ch: str) -> bool:
    """Punctuation (Unicode P*) or whitespace, full-width forms included."""
    return ch.isspace() or unicodedata.category(ch)[0] == "P"


def _overlaps(a: Span, b: Span) -> bool:
    return a[0] < b[1] and b[0] < a[1]


@dataclass
class Finding:
    """One flagged span: the document, the predicted span, its surface and the gold it relates to."""

    doc: int
    span: Span
    surface: str
    gold: Span | None = None


@dataclass
class UserChecks:
    """Flagged predictions per check; ``counts()`` gives the numbers for a table."""

    person_cut: list[Finding] = field(default_factory=list)        # strict prefix/suffix of a gold person
    line_break: list[Finding] = field(default_factory=list)        # the span contains a line break
    punct_only: list[Finding] = field(default_factory=list)        # every character punctuation/space
    punct_edged: list[Finding] = field(default_factory=list)       # not gold, first/last char punctuation/space
    spurious_person: list[Finding] = field(default_factory=list)   # a person overlapping no gold entity
    predicted: int = 0
    gold_persons: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "person_cut": len(self.person_cut), "line_break": len(self.line_break),
            "punct_only": len(self.punct_only), "punct_edged": len(self.punct_edged),
            "spurious_person": len(self.spurious_person),
        }


def user_checks(texts: Sequence[str], gold: Sequence[Iterable[Span]], pred: Sequence[Iterable[Span]],
                person_labels: frozenset[str] = PERSON_LABELS) -> UserChecks:
    """Run every user-facing check over the predictions of each document."""
    if not (len(texts) == len(gold) == len(pred)):
        raise ValueError(f"{len(texts)} texts, {len(gold)} gold and {len(pred)} predicted documents")
    out = UserChecks()
    for d, (text, g_doc, p_doc) in enumerate(zip(texts, gold, pred)):
        g_doc, p_doc = sorted(set(g_doc)), sorted(set(p_doc))
        g_spans = {(s, e) for s, e, _ in g_doc}
        g_persons = [g for g in g_doc if g[2] in person_labels]
        out.gold_persons += len(g_persons)
        for p in p_doc:
            out.predicted += 1
            s, e, lab = p
            surface = text[s:e]
            if lab in person_labels:
                for g in g_persons:
                    if (s, e) != (g[0], g[1]) and g[0] <= s and e <= g[1] and (s == g[0] or e == g[1]):
                        out.person_cut.append(Finding(d, p, surface, g))
                        break
                if not any(_overlaps(p, g) for g in g_doc):
                    out.spurious_person.append(Finding(d, p, surface))
            if "\n" in surface or "\r" in surface:
                out.line_break.append(Finding(d, p, surface))
            if all(is_punct_or_space(c) for c in surface):
                out.punct_only.append(Finding(d, p, surface))
            elif (s, e) not in g_spans and (is_punct_or_space(surface[0]) or is_punct_or_space(surface[-1])):
                out.punct_edged.append(Finding(d, p, surface))
    return out


def length_bucket(n: int) -> str:
    for name, lo, hi in LENGTH_BUCKETS:
        if lo <= n <= hi:
            return name
    raise ValueError(f"span length must be >= 1, got {n}")


def boundary_kind(gold: Span, pred: Span) -> str:
    """How an overlapping, unequal predicted span differs from the gold one."""
    gs, ge, ps, pe = gold[0], gold[1], pred[0], pred[1]
    if gs <= ps and pe <= ge:
        if ps == gs:
            return "cut end (pred is a prefix)"
        if pe == ge:
            return "cut start (pred is a suffix)"
        return "inside gold"
    if ps <= gs and ge <= pe:
        if ps == gs:
            return "extends end"
        if pe == ge:
            return "extends start"
        return "extends both sides"
    return "crossing"


@dataclass
class ErrorBreakdown:
    """Counts of a strict comparison, split by error kind, label and length."""

    gold: Counter = field(default_factory=Counter)       # correct / type / boundary / missed (per gold)
    pred: Counter = field(default_factory=Counter)       # correct / type / boundary / spurious (per prediction)
    by_label: dict[str, Counter] = field(default_factory=dict)   # label -> tp / n_gold / n_pred
    by_length: dict[str, Counter] = field(default_factory=dict)  # bucket -> tp / n_gold / n_pred
    type_confusions: Counter = field(default_factory=Counter)    # (gold label, predicted label), same span
    boundary_kinds: Counter = field(default_factory=Counter)     # (gold label, kind)
    boundary_diffs: Counter = field(default_factory=Counter)     # (gold label, kind, extra/missing text)
    examples: dict[tuple, list[tuple[str, str]]] = field(default_factory=dict)  # (label, kind) -> (gold, pred) surfaces

    def f1_rows(self, table: dict[str, Counter]) -> dict[str, dict[str, float]]:
        return {k: prf(c["tp"], c["n_pred"], c["n_gold"]) for k, c in table.items()}


def _diff_text(text: str, gold: Span, pred: Span) -> str:
    """The characters the prediction adds (+) or leaves out (-) at each end."""
    parts = []
    if pred[0] < gold[0]:
        parts.append("+" + text[pred[0]:gold[0]] + "|")
    elif pred[0] > gold[0]:
        parts.append("-" + text[gold[0]:pred[0]] + "|")
    if pred[1] > gold[1]:
        parts.append("|+" + text[gold[1]:pred[1]])
    elif pred[1] < gold[1]:
        parts.append("|-" + text[pred[1]:gold[1]])
    return " ".join(parts)


def error_breakdown(texts: Sequence[str], gold: Sequence[Iterable[Span]], pred: Sequence[Iterable[Span]],
                    max_examples: int = 5) -> ErrorBreakdown:
    """Sort every gold and predicted span into correct, type error (same span, other label),
    boundary error (overlapping, not equal) or missed / spurious; count by label and length."""
    if not (len(texts) == len(gold) == len(pred)):
        raise ValueError(f"{len(texts)} texts, {len(gold)} gold and {len(pred)} predicted documents")
    out = ErrorBreakdown()

    def bump(table: dict[str, Counter], key: str, what: str) -> None:
        table.setdefault(key, Counter())[what] += 1

    for text, g_doc, p_doc in zip(texts, gold, pred):
        g_set, p_set = set(g_doc), set(p_doc)
        p_spans = {(s, e) for s, e, _ in p_set}
        g_spans = {(s, e) for s, e, _ in g_set}
        for g in sorted(g_set):
            bump(out.by_label, g[2], "n_gold")
            bump(out.by_length, length_bucket(g[1] - g[0]), "n_gold")
            if g in p_set:
                out.gold["correct"] += 1
                bump(out.by_label, g[2], "tp")
                bump(out.by_length, length_bucket(g[1] - g[0]), "tp")
            elif (g[0], g[1]) in p_spans:
                out.gold["type"] += 1
                for p in p_set:
                    if (p[0], p[1]) == (g[0], g[1]):
                        out.type_confusions[(g[2], p[2])] += 1
            elif any(_overlaps(g, p) for p in p_set):
                out.gold["boundary"] += 1
                for p in sorted(p_set):
                    if _overlaps(g, p) and (p[0], p[1]) not in g_spans:
                        kind = boundary_kind(g, p)
                        out.boundary_kinds[(g[2], kind)] += 1
                        out.boundary_diffs[(g[2], kind, _diff_text(text, g, p))] += 1
                        ex = out.examples.setdefault((g[2], kind), [])
                        if len(ex) < max_examples:
                            ex.append((text[g[0]:g[1]], text[p[0]:p[1]]))
            else:
                out.gold["missed"] += 1
        for p in sorted(p_set):
            bump(out.by_label, p[2], "n_pred")
            bump(out.by_length, length_bucket(p[1] - p[0]), "n_pred")
            if p in g_set:
                out.pred["correct"] += 1
            elif (p[0], p[1]) in g_spans:
                out.pred["type"] += 1
            elif any(_overlaps(p, g) for g in g_set):
                out.pred["boundary"] += 1
            else:
                out.pred["spurious"] += 1
    return out
