"""Redraw a committed `nere bench` report's plots next to it, named after the report.

    python scripts/bench_plots.py docs/benchmarks/zoo-ner-bert-crf.json [...]

Writes NAME-throughput.png, and NAME-latency.png / NAME-rss.png where the report measured
latency / memory vs corpus size, with the same drawing code `nere bench` uses for its --out.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from nere.bench.report import plots


def redraw(report: Path) -> list[Path]:
    """The plots of one report.json, written beside it as ``<stem>-<plot>.png``."""
    r = json.loads(report.read_text())
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in plots(r, Path(tmp)):
            target = report.with_name(f"{report.stem}-{name}")
            target.write_bytes((Path(tmp) / name).read_bytes())
            written.append(target)
    return written


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__.strip().splitlines()[0])
    for arg in argv:
        for path in redraw(Path(arg)):
            print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
