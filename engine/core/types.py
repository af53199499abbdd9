"""The data model every loader returns and every featurizer starts from.

Spans are character offsets into the original text, end exclusive; tokens, subwords
and windows are views that map back to them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

NO_RELATION = "no_relation"


@dataclass(frozen=True, order=True)
class Entity:
    """A typed character span ``text[start:end]``."""

    start: int
    end: int
    label: str

    def __post_init__(self) -> None:
        if not (0 <= self.start < self.end):
            raise ValueError(f"invalid entity span [{self.start}, {self.end})")


@dataclass(frozen=True)
class Relation:
    """A directed relation; ``head`` and ``tail`` index into ``Example.entities``."""

    head: int
    tail: int
    label: str


@dataclass
class Example:
    """One sentence (or document) with its gold annotations."""

    text: str
    entities: list[Entity] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    id: str | None = None

    def validate(self) -> None:
        """Raise ValueError if a span leaves the text or a relation points nowhere."""
        n = len(self.text)
        for e in self.entities:
            if e.end > n:
                raise ValueError(f"entity {e} ends beyond text of length {n}")
        for r in self.relations:
            if not (0 <= r.head < len(self.entities) and 0 <= r.tail < len(self.entities)):
                raise ValueError(f"relation {r} refers to a missing entity")

    def triples(self) -> set[tuple[tuple[int, int, str], tuple[int, int, str], str]]:
        """Relations as (head span+label, tail span+label, relation label) triples."""
        out = set()
        for r in self.relations:
            h, t = self.entities[r.head], self.entities[r.tail]
            out.add(((h.start, h.end, h.label), (t.start, t.end, t.label), r.label))
        return out
