"""Score a bundle the way it is used: every text through the engine, tables against gold.

``nere export --verify`` records these figures in the manifest and ``nere evaluate
BUNDLE`` prints them, from this one function, so the two cannot drift apart. Each text is
one document (sentence splitting and windows included); entities are strict character
spans, relations strict (head span+label, tail span+label, relation) triples.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import pyarrow as pa

from nere.engine.core.metrics import Span, Triple, entity_scores, triple_scores
from nere.engine.core.types import Example

PRF = ("precision", "recall", "f1")


def engine_predictions(engine: Any, texts: Sequence[str]) -> tuple[list[list[Span]], list[set[Triple]] | None]:
    """(entities per text, triples per text or None when the engine finds no relations)."""
    ents, rels = engine.extract(pa.table({"id": pa.array(range(len(texts)), pa.int64()), "text": list(texts)}))
    by_doc: dict[int, dict[int, Span]] = defaultdict(dict)
    cols = ents.select(["doc_id", "entity_id", "start", "end", "label"]).to_pydict()
    for d, i, s, e, lab in zip(cols["doc_id"], cols["entity_id"], cols["start"], cols["end"], cols["label"]):
        by_doc[d][i] = (s, e, lab)
    entities = [sorted(by_doc[d].values()) for d in range(len(texts))]
    if engine.bundle.re is None and engine.re_bundle is None:
        return entities, None
    triples: list[set[Triple]] = [set() for _ in texts]
    rc = rels.select(["doc_id", "head_id", "tail_id", "label"]).to_pydict()
    for d, h, t, lab in zip(rc["doc_id"], rc["head_id"], rc["tail_id"], rc["label"]):
        triples[d].add((by_doc[d][h], by_doc[d][t], lab))
    return entities, triples


def headline(scores: dict[str, Any]) -> dict[str, Any]:
    """The one figure a bundle is sold on: triples F1 when it extracts relations, else entity F1."""
    if scores.get("triples") is not None:
        return {"metric": "triples_f1", "value": scores["triples"]["f1"], "through": "engine"}
    return {"metric": "entity_f1", "value": scores["entities"]["f1"], "through": "engine"}


def score_predictions(entities: Sequence[Iterable[Span]], triples: Sequence[Iterable[Triple]] | None,
                      gold_entities: Sequence[Iterable[Span]], examples: Sequence[Example]) -> dict[str, Any]:
    """``{"documents", "entities": P/R/F1, "triples": P/R/F1 or None, "headline"}``."""
    ent = entity_scores(gold_entities, entities)
    out: dict[str, Any] = {"documents": len(examples), "entities": {k: ent[k] for k in PRF}, "triples": None}
    if triples is not None:
        tri = triple_scores([ex.triples() for ex in examples], triples)
        out["triples"] = {k: tri[k] for k in PRF}
    out["headline"] = headline(out)
    return out


def score_bundle(bundle: Any, examples: Sequence[Example], gold_entities: Sequence[Iterable[Span]],
                 re_bundle: str | Path | None = None, **engine_options: Any) -> dict[str, Any]:
    """Run ``examples`` through an engine over ``bundle`` (a path, a loaded Bundle or an
    Engine) and score its tables; ``gold_entities``: the flat gold spans per example (the
    dataset policy decides how nested gold is flattened)."""
    from nere.engine.api import Engine

    engine = bundle if isinstance(bundle, Engine) else Engine(bundle, re_bundle, **engine_options)
    entities, triples = engine_predictions(engine, [ex.text for ex in examples])
    return score_predictions(entities, triples, gold_entities, examples)
