"""brat standoff (.ann) reading, record by record.

A record starts with ``T``/``R``/``#`` + id, or ``*``, followed by a tab; any other line
continues the previous record (brat writes a surface that crosses a line break of the
text as two physical lines, joined here with the newline it stands for).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_RECORD_START = re.compile(r"^(?:[TR#]\d+|\*)\t")


@dataclass
class Mention:
    id: str
    label: str
    fragments: list[tuple[int, int]]
    surface: str


@dataclass
class BratRelation:
    id: str
    label: str
    arg1: str
    arg2: str


@dataclass
class AnnFile:
    mentions: list[Mention] = field(default_factory=list)
    relations: list[BratRelation] = field(default_factory=list)
    coreference_groups: int = 0
    notes: int = 0
    malformed: list[str] = field(default_factory=list)  # "line N: why"


def records(raw: str) -> list[tuple[int, str]]:
    """(first line number, full record text) per record; continuation lines joined by \\n."""
    out: list[tuple[int, str]] = []
    for lineno, line in enumerate(raw.split("\n"), 1):
        line = line.rstrip("\r")
        if _RECORD_START.match(line) or not out:
            if line.strip():
                out.append((lineno, line))
        else:
            out[-1] = (out[-1][0], out[-1][1] + "\n" + line)
    # a trailing newline of the file is not part of the last surface
    return [(n, r.rstrip("\n")) for n, r in out]


def _fragments(spec: str) -> list[tuple[int, int]]:
    frags = []
    for part in spec.split(";"):
        s, e = part.split()
        frags.append((int(s), int(e)))
    return frags


def parse_ann(raw: str) -> AnnFile:
    """Parse one .ann file; bad records are listed in ``malformed``, never raised."""
    ann = AnnFile()
    for lineno, rec in records(raw):
        kind = rec[0]
        fields = rec.split("\t")
        try:
            if kind == "T":
                rid, spec, surface = rec.split("\t", 2)
                label, _, offsets = spec.partition(" ")
                ann.mentions.append(Mention(rid, label, _fragments(offsets), surface))
            elif kind == "R":
                label, a1, a2 = fields[1].split()
                if not (a1.startswith("Arg1:") and a2.startswith("Arg2:")):
                    raise ValueError("expected Arg1:<id> Arg2:<id>")
                ann.relations.append(BratRelation(fields[0], label, a1[5:], a2[5:]))
            elif kind == "*":
                ann.coreference_groups += 1
            elif kind == "#":
                ann.notes += 1
            else:
                raise ValueError("not a T, R, * or # record")
        except ValueError as err:
            ann.malformed.append(f"line {lineno}: {err}")
    return ann
