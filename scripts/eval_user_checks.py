"""Strict scores and the user-facing checks of a bundle on a dataset, as a markdown table.

    python scripts/eval_user_checks.py artifacts/zh-msra-ner-bilstm-crf-int8 --dataset zh-judgments
    python scripts/eval_user_checks.py artifacts/en-conll04-joint-int8 --dataset en-news --examples 5

Every text goes through the engine as one document (as `nere evaluate BUNDLE` does); the
checks are those of `nere.engine.core.checks.user_checks`: person names cut to a
prefix/suffix of a gold name, entities across a line break, punctuation-only spans and
non-gold spans edged by punctuation or spaces, persons overlapping no gold entity.
"""
from __future__ import annotations

import argparse
import json

from nere.engine import Engine
from nere.engine.core.checks import Finding, user_checks
from nere.engine.score import engine_predictions, score_predictions
from nere.train.datasets import load_dataset
from nere.train.datasets.policy import flat_entities

CHECKS = {
    "person_cut": "person name cut short (strict prefix/suffix of a gold person)",
    "line_break": "entity crossing a line break",
    "punct_only": "punctuation-only entity",
    "punct_edged": "entity edged by punctuation/space (not a gold span)",
    "spurious_person": "person overlapping no gold entity",
}


def _show(f: Finding, texts: list[str]) -> str:
    """A flagged span as `surface` LABEL, line breaks written as \\n, with the gold it cuts."""
    shown = f"`{f.surface}`".replace("\n", "\\n")
    gold = f" (gold `{texts[f.doc][f.gold[0]:f.gold[1]]}`)" if f.gold is not None else ""
    return f"{shown} {f.span[2]}{gold}"


def run(bundle: str, dataset: str, split: str = "test", limit: int | None = None, device: str = "cpu",
        threads: int | None = None) -> dict:
    """Scores and checks as one dict (the table is rendered from it)."""
    examples = load_dataset(dataset, split, limit=limit)
    texts = [ex.text for ex in examples]
    gold = [[(e.start, e.end, e.label) for e in flat_entities(ex.entities)[0]] for ex in examples]
    engine = Engine.load(bundle, device=device, threads=threads)
    entities, triples = engine_predictions(engine, texts)
    scores = score_predictions(entities, triples, gold, examples)
    checks = user_checks(texts, gold, entities)
    wrong = [] if triples is None else [(d, t) for d, (g, p) in enumerate(zip((ex.triples() for ex in examples), triples))
                                        for t in sorted(p - set(g))]
    return {"wrong_triples": wrong, "bundle": bundle, "dataset": dataset, "split": split, "scores": scores, "checks": checks, "texts": texts}


def markdown(result: dict, examples: int = 3) -> str:
    s, c = result["scores"], result["checks"]
    lines = [f"**{result['bundle']}** on `{result['dataset']}` ({result['split']}, {s['documents']} documents)", "",
             "| measure | value | examples |", "|---|---|---|"]
    e = s["entities"]
    lines.append(f"| entities strict P / R / F1 | {e['precision']:.3f} / {e['recall']:.3f} / {e['f1']:.3f} | |")
    if s["triples"] is not None:
        t = s["triples"]
        lines.append(f"| triples strict P / R / F1 | {t['precision']:.3f} / {t['recall']:.3f} / {t['f1']:.3f} | |")
    counts = c.counts()
    for key, title in CHECKS.items():
        found = getattr(c, key)
        shown = "; ".join(_show(f, result["texts"]) for f in found[:examples]).replace("|", "\\|")
        lines.append(f"| {title} | {counts[key]} of {c.predicted} predicted | {shown} |")
    if s["triples"] is not None:
        wrong = result["wrong_triples"]
        shown = "; ".join(f"`{_surface(result['texts'][d], h)}` {lab} `{_surface(result['texts'][d], t)}`"
                          for d, (h, t, lab) in wrong[:examples])
        lines.append(f"| predicted triples not in gold | {len(wrong)} | {shown.replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


def _surface(text: str, span: tuple) -> str:
    return text[span[0]:span[1]].replace("\n", "\\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--examples", type=int, default=3, help="flagged spans shown per check")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true", help="print counts and scores as JSON")
    args = ap.parse_args()
    result = run(args.bundle, args.dataset, args.split, args.limit, args.device)
    if args.json:
        print(json.dumps({"scores": result["scores"], "checks": result["checks"].counts(),
                          "predicted": result["checks"].predicted}, indent=2))
    else:
        print(markdown(result, args.examples))


if __name__ == "__main__":
    main()
