"""Error analysis of a bundle on a dataset split, through the engine, as markdown.

    python scripts/error_analysis.py artifacts/zh-msra-ner-bilstm-crf-int8 --dataset msra --split dev
    python scripts/error_analysis.py artifacts/en-conll04-joint-int8 --dataset conll04 --split dev

Every text is one engine document (as `nere evaluate BUNDLE` does). Prints strict F1 by
label and by entity length in characters, the error kinds (per gold span: type, boundary,
missed; per predicted span: type, boundary, spurious; see
`nere.engine.core.checks.error_breakdown`), and the most frequent boundary patterns with
the characters a prediction adds (+) or leaves out (-) at each end.
"""
from __future__ import annotations

import argparse
import time

from nere.engine import Engine
from nere.engine.core.checks import LENGTH_BUCKETS, ErrorBreakdown, UserChecks, error_breakdown, user_checks
from nere.engine.core.metrics import entity_scores, set_prf
from nere.engine.score import engine_predictions
from nere.train.datasets import load_dataset
from nere.train.datasets.policy import flat_entities


def _cell(text: str) -> str:
    """A surface safe inside a markdown table cell (line breaks shown as \\n)."""
    return text.replace("\n", "\\n").replace("|", "¦")


def _f1_table(title: str, rows: dict[str, dict[str, float]], counts: dict, order: list[str]) -> list[str]:
    out = [f"| {title} | gold | predicted | P | R | F1 |", "|---|---|---|---|---|---|"]
    for key in order:
        if key in rows:
            r, c = rows[key], counts[key]
            out.append(f"| {key} | {c['n_gold']} | {c['n_pred']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} |")
    return out


def relation_table(gold: list[set], pred: list[set]) -> list[str]:
    """Strict triples overall and per relation label."""
    labels = sorted({t[2] for doc in gold for t in doc} | {t[2] for doc in pred for t in doc})
    rows = {"all": set_prf(gold, pred)}
    for lab in labels:
        rows[lab] = set_prf([{t for t in d if t[2] == lab} for d in gold], [{t for t in d if t[2] == lab} for d in pred])
    out = ["| relation (strict triples) | gold | P | R | F1 |", "|---|---|---|---|---|"]
    out += [f"| {k} | {r['support']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} |" for k, r in rows.items()]
    return out


def report(b: ErrorBreakdown, overall: dict, top: int, checks: UserChecks | None = None) -> str:
    lines = [f"Strict entities: P {overall['precision']:.4f}  R {overall['recall']:.4f}  F1 {overall['f1']:.4f}", ""]
    lines += _f1_table("label", b.f1_rows(b.by_label), b.by_label, sorted(b.by_label)) + [""]
    lines += _f1_table("length (chars)", b.f1_rows(b.by_length), b.by_length, [n for n, _, _ in LENGTH_BUCKETS]) + [""]
    n_gold, n_pred = sum(b.gold.values()), sum(b.pred.values())
    lines += ["| error kind | of gold spans | of predicted spans |", "|---|---|---|"]
    for kind, g_key, p_key in (("correct", "correct", "correct"), ("type (same span, other label)", "type", "type"),
                               ("boundary (overlapping, not equal)", "boundary", "boundary"),
                               ("missed / spurious (no overlap)", "missed", "spurious")):
        lines.append(f"| {kind} | {b.gold[g_key]} ({b.gold[g_key] / max(n_gold, 1):.1%}) "
                     f"| {b.pred[p_key]} ({b.pred[p_key] / max(n_pred, 1):.1%}) |")
    if b.type_confusions:
        lines += ["", "| type error: gold -> predicted | count |", "|---|---|"]
        lines += [f"| {g} -> {p} | {n} |" for (g, p), n in b.type_confusions.most_common()]
    if checks is not None:
        surname = sum(1 for f in checks.person_cut if f.span[1] - f.span[0] == 1 and f.span[0] == f.gold[0])
        c = checks.counts()
        lines += ["", f"User checks ({checks.predicted} predicted, {checks.gold_persons} gold persons): "
                  f"person cut short {c['person_cut']} (surname only {surname}), across a line break {c['line_break']}, "
                  f"punctuation-only {c['punct_only']}, punctuation-edged {c['punct_edged']}, "
                  f"person overlapping no gold entity {c['spurious_person']}."]
    lines += ["", "| gold label | boundary pattern | count | examples (gold -> predicted) |", "|---|---|---|---|"]
    for (label, kind), n in b.boundary_kinds.most_common(top):
        ex = "; ".join(f"`{_cell(g)}` -> `{_cell(p)}`" for g, p in b.examples.get((label, kind), [])[:3])
        lines.append(f"| {label} | {kind} | {n} | {ex} |")
    lines += ["", "Boundary differences seen at least twice:", "",
              "| gold label | pattern | added (+) / left out (-) | count |", "|---|---|---|---|"]
    for (label, kind, diff), n in b.boundary_diffs.most_common(top):
        if n < 2:
            break
        lines.append(f"| {label} | {kind} | `{_cell(diff)}` | {n} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--split", default="dev")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--top", type=int, default=12, help="boundary patterns listed")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    examples = load_dataset(args.dataset, args.split, limit=args.limit)
    texts = [ex.text for ex in examples]
    gold = [[(e.start, e.end, e.label) for e in flat_entities(ex.entities)[0]] for ex in examples]
    started = time.perf_counter()
    engine = Engine.load(args.bundle, device=args.device, threads=args.threads)
    entities, triples = engine_predictions(engine, texts)
    seconds = time.perf_counter() - started
    print(f"**{args.bundle}** on `{args.dataset}` {args.split} ({len(examples)} texts, "
          f"{sum(map(len, texts))} characters, {seconds:.0f}s through the engine)\n")
    print(report(error_breakdown(texts, gold, entities), entity_scores(gold, entities), args.top,
                 user_checks(texts, gold, entities)))
    if triples is not None:
        print("\n" + "\n".join(relation_table([ex.triples() for ex in examples], triples)))


if __name__ == "__main__":
    main()
