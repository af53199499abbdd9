"""Regenerate the NER results section of docs/results.md and its docs/results.json records.

    python scripts/ner_results.py --runs runs --datasets conll04 msra
    python scripts/ner_results.py --from-results      # no runs/: render the records already in results.json

Reads runs/<dataset>-ner-<kind>/metrics.json (written by `nere train ner`); every number,
command, hardware string and time comes from those files. Records are merged into
docs/results.json with the study's record format (nere.train.study.record_of). With
--from-results the section is rendered from docs/results.json alone, which is unchanged.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nere.train.study import NER_KINDS, merge_records, record_of

BEGIN, END = "<!-- ner-results:begin -->", "<!-- ner-results:end -->"


def records_from_runs(runs: Path, datasets: list[str]) -> list[dict]:
    """Training records of the NER runs found under ``runs`` (missing runs are skipped)."""
    records = []
    for ds in datasets:
        for kind in NER_KINDS:
            path = runs / f"{ds}-ner-{kind}" / "metrics.json"
            if path.is_file():
                records.append(record_of(json.loads(path.read_text())))
    return records


def records_from_results(results: Path, datasets: list[str]) -> list[dict]:
    """The NER training records (no ``kind``: not export records) already in results.json."""
    return [r for r in json.loads(results.read_text())
            if r.get("task") == "ner" and r.get("dataset") in datasets and "kind" not in r
            and str(r.get("command", "")).startswith("nere train")]


def section(records: list[dict], datasets: list[str]) -> str:
    """The section's Markdown, one table per dataset, between the BEGIN/END markers."""
    by_key = {(r["dataset"], r["model"]): r for r in records}
    lines = [BEGIN, "## NER (four kinds, CoNLL04 and MSRA)", "",
             "Test split; the epoch is chosen on dev F1 (early stopping). Strict entity-level micro "
             "P/R/F1 (exact span and label) and token accuracy (`nere.engine.core.metrics`, checked "
             "against seqeval strict mode in tests/test_metrics.py). Regenerate this section with "
             "`python scripts/ner_results.py`.", ""]
    for ds in datasets:
        lines += [f"### {ds}", "", "|model|accuracy|precision|recall|F1|epochs run (best)|train s|hardware|",
                  "|---|---|---|---|---|---|---|---|"]
        cmds = []
        for kind in NER_KINDS:
            rec = by_key.get((ds, kind))
            if rec is None:
                lines.append(f"|{kind}|not run|||||||")
                continue
            t = rec["metrics"]
            lines.append(f"|{kind}|{t['accuracy']:.4f}|{t['precision']:.4f}|{t['recall']:.4f}|{t['f1']:.4f}|"
                         f"{rec['epochs_run']} ({rec['best_epoch']})|{rec['seconds']:.0f}|{rec['hardware']}|")
            cmds.append(f"- {kind}: `{rec['command']}`")
        lines += ["", "Commands:", *cmds, ""]
    lines.append(END)
    return "\n".join(lines)


def replace_section(old: str, text: str) -> str:
    """``old`` with its one marked section replaced by ``text`` (appended when unmarked).

    A file with unpaired or repeated markers is refused: appending there is how the section
    once ended up in results.md twice.
    """
    begins, ends = old.count(BEGIN), old.count(END)
    if begins == ends == 0:
        return old.rstrip("\n") + "\n\n" + text + "\n"
    if begins != 1 or ends != 1 or old.index(BEGIN) > old.index(END):
        raise SystemExit(f"results file has {begins} '{BEGIN}' and {ends} '{END}' markers; "
                         "expected one pair: fix the file by hand")
    start, stop = old.index(BEGIN), old.index(END) + len(END)
    return old[:start] + text + old[stop:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--datasets", nargs="+", default=["conll04", "msra"])
    ap.add_argument("--results-md", default="docs/results.md")
    ap.add_argument("--results-json", default="docs/results.json")
    ap.add_argument("--from-results", action="store_true",
                    help="render the records already in --results-json instead of reading runs/")
    args = ap.parse_args()
    if args.from_results:
        records = records_from_results(Path(args.results_json), args.datasets)
    else:
        records = records_from_runs(Path(args.runs), args.datasets)
    md = Path(args.results_md)
    old = md.read_text() if md.is_file() else "# Results\n"
    md.write_text(replace_section(old, section(records, args.datasets)))
    if not args.from_results:
        merge_records(Path(args.results_json), records)
    print(f"{len(records)} NER records; section in {args.results_md}")


if __name__ == "__main__":
    main()
