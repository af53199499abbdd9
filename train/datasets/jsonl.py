"""Users' own data as JSON Lines, one Example per line:

    {"id": "doc1-s0", "text": "Bruno Pusterla works for FIAT .",
     "entities": [{"start": 0, "end": 14, "label": "Peop"}, {"start": 25, "end": 29, "label": "Org"}],
     "relations": [{"head": 0, "tail": 1, "label": "Work_For"}]}

``id`` is optional (a string or integer, read as a string), ``entities`` and ``relations``
may be omitted (empty). Offsets are characters of ``text``, end exclusive; ``head`` and
``tail`` index into ``entities``. An entity may carry its surface as ``"text"``, which is
then checked against ``text[start:end]``. Every problem is a one-line DatasetFormatError
naming ``file:line``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from nere.engine.core import Entity, Example, Relation
from nere.train.datasets.base import DatasetFormatError, DatasetNotFoundError, check_split

_KEYS = {"id", "text", "entities", "relations"}
_ENTITY_KEYS = {"start", "end", "label", "text"}
_RELATION_KEYS = {"head", "tail", "label"}


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _keys(obj: object, allowed: set[str], required: set[str], what: str) -> dict:
    if not isinstance(obj, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ValueError(f"{what} has unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(obj))
    if missing:
        raise ValueError(f"{what} lacks {missing[0]!r}")
    return obj


def parse_line(line: str) -> Example:
    """One JSON line -> Example; ValueError with a short reason when it is not valid."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"bad JSON ({err.msg} at column {err.colno})") from None
    obj = _keys(obj, _KEYS, {"text"}, "the line")
    text = obj["text"]
    if not isinstance(text, str):
        raise ValueError(f"'text' must be a string, got {type(text).__name__}")
    rid = obj.get("id")
    if rid is not None and not (isinstance(rid, str) or _is_int(rid)):
        raise ValueError(f"'id' must be a string or integer, got {type(rid).__name__}")
    raw_entities = obj.get("entities", [])
    raw_relations = obj.get("relations", [])
    if not isinstance(raw_entities, list) or not isinstance(raw_relations, list):
        raise ValueError("'entities' and 'relations' must be lists")

    entities = []
    for k, ent in enumerate(raw_entities):
        ent = _keys(ent, _ENTITY_KEYS, {"start", "end", "label"}, f"entity {k}")
        s, e, label = ent["start"], ent["end"], ent["label"]
        if not (_is_int(s) and _is_int(e)):
            raise ValueError(f"entity {k}: start and end must be integers")
        if not (isinstance(label, str) and label):
            raise ValueError(f"entity {k}: label must be a non-empty string")
        if not (0 <= s < e <= len(text)):
            raise ValueError(f"entity {k}: span [{s}, {e}) outside text of length {len(text)} or empty")
        if "text" in ent and ent["text"] != text[s:e]:
            raise ValueError(f"entity {k}: text {ent['text']!r} != text[{s}:{e}] {text[s:e]!r}")
        entities.append(Entity(s, e, label))

    relations = []
    for k, rel in enumerate(raw_relations):
        rel = _keys(rel, _RELATION_KEYS, _RELATION_KEYS, f"relation {k}")
        h, t, label = rel["head"], rel["tail"], rel["label"]
        if not (_is_int(h) and _is_int(t)):
            raise ValueError(f"relation {k}: head and tail must be integers")
        if not (0 <= h < len(entities) and 0 <= t < len(entities)):
            raise ValueError(f"relation {k}: head {h} / tail {t} out of range for {len(entities)} entities")
        if not (isinstance(label, str) and label):
            raise ValueError(f"relation {k}: label must be a non-empty string")
        relations.append(Relation(h, t, label))
    return Example(text, entities, relations, id=None if rid is None else str(rid))


def read_jsonl(path: str | os.PathLike, limit: int | None = None) -> list[Example]:
    """Examples of one .jsonl file (blank lines skipped); first ``limit`` when given."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: no such file")
    out: list[Example] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if limit is not None and len(out) >= limit:
                break
            try:
                line = raw.decode("utf-8")
                if line.strip():
                    out.append(parse_line(line))
            except UnicodeDecodeError:
                raise DatasetFormatError(f"{path}:{lineno}: not UTF-8 text") from None
            except ValueError as err:
                raise DatasetFormatError(f"{path}:{lineno}: {err}") from None
    return out


def split_file(path: str | os.PathLike, split: str) -> Path:
    """A .jsonl file is used as given (whatever ``split``); a folder gives ``{split}.jsonl``."""
    path = Path(path)
    if path.is_dir():
        path = path / f"{check_split(split)}.jsonl"
        if not path.is_file():
            raise DatasetNotFoundError(f"{path}: no such file (a data folder holds train/dev/test.jsonl)")
    return path


def load(path: str | os.PathLike, split: str, limit: int | None = None) -> list[Example]:
    return read_jsonl(split_file(path, split), limit)


def example_to_dict(ex: Example) -> dict:
    obj: dict = {} if ex.id is None else {"id": ex.id}
    obj["text"] = ex.text
    obj["entities"] = [{"start": e.start, "end": e.end, "label": e.label} for e in ex.entities]
    obj["relations"] = [{"head": r.head, "tail": r.tail, "label": r.label} for r in ex.relations]
    return obj


def write_jsonl(examples: Iterable[Example], path: str | os.PathLike) -> int:
    """Write examples as JSON Lines (UTF-8, unescaped); returns the count written.

    Each example is validated first, so a file written here always reads back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for ex in examples:
            ex.validate()
            f.write(json.dumps(example_to_dict(ex), ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n
