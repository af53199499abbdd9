"""Regenerate the NER results section of docs/results.md and its docs/results.json records.

    python scripts/ner_results.py --runs runs --datasets conll04 msra

Reads runs/<dataset>-ner-<kind>/metrics.json (written by `nere train ner`); every number,
command, hardware string and time comes from those files. Records are merged into
docs/results.json with the study's record format (nere.train.study.record_of).
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from nere.train.study import NER_KINDS, merge_records, record_of

BEGIN, END = "<!-- ner-results:begin -->", "<!-- ner-results:end -->"


def section(runs: Path, datasets: list[str]) -> tuple[str, list[dict]]:
    records: list[dict] = []
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
            path = runs / f"{ds}-ner-{kind}" / "metrics.json"
            if not path.is_file():
                lines.append(f"|{kind}|not run|||||||")
                continue
            m = json.loads(path.read_text())
            rec = record_of(m)
            records.append(rec)
            t = m["test"]
            lines.append(f"|{kind}|{t['accuracy']:.4f}|{t['precision']:.4f}|{t['recall']:.4f}|{t['f1']:.4f}|"
                         f"{len(m['history'])} ({m['best_epoch']})|{m['seconds']:.0f}|{m['hardware']}|")
            cmds.append(f"- {kind}: `{m['command']}`")
        lines += ["", "Commands:", *cmds, ""]
    lines.append(END)
    return "\n".join(lines), records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--datasets", nargs="+", default=["conll04", "msra"])
    ap.add_argument("--results-md", default="docs/results.md")
    ap.add_argument("--results-json", default="docs/results.json")
    args = ap.parse_args()
    text, records = section(Path(args.runs), args.datasets)
    md = Path(args.results_md)
    old = md.read_text() if md.is_file() else "# Results\n"
    if BEGIN in old:
        new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: text, old, flags=re.S)
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    md.write_text(new)
    merge_records(Path(args.results_json), records)
    print(f"{len(records)} NER records -> {args.results_json}; section in {args.results_md}")


if __name__ == "__main__":
    main()
