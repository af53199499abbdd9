"""Export parity table from bundle manifests: markdown for docs/results.md and records for
docs/results.json.

    python -m nere.export.report runs/bundles/* --results docs/results.json

Records carry ``"kind": "export"``; only export records with the same
task + dataset + model + precision are replaced, other engineers' records are kept.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from nere.engine.manifest import Manifest

KEY = ("task", "dataset", "model", "precision")


def record(folder: Path, split: str = "test") -> dict[str, Any] | None:
    """One results.json record from a verified bundle, or None when it was not verified."""
    m = Manifest.read(folder).data
    metrics = m.get("metrics", {}).get(split)
    if not metrics:
        return None
    made = m["made_by"]
    keep = ("f1", "torch_f1", "f1_diff", "agreement", "max_abs_logit_diff", "precision", "recall",
            "re_f1", "re_torch_f1", "re_agreement", "re_max_abs_logit_diff", "re_pair_agreement",
            "pair_agreement", "max_abs_hidden_diff", "engine_agreement", "engine_f1", "sentences", "pairs",
            "passed", "headline")
    return {
        "kind": "export",
        "task": m["task"],
        "dataset": metrics.get("dataset"),
        "split": split,
        "model": m["model"],
        "precision": m["precision"],
        "metrics": {k: metrics[k] for k in keep if k in metrics},
        "size_mb": round(made["bundle_bytes"] / 1e6, 2),
        "export_seconds": made["export_seconds"],
        "bundle": folder.name,
        "command": made["command"],
        "versions": made["versions"],
        "created": made["created"],
    }


def merge(existing: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace our own records with the same key, append the rest, keep everyone else's."""
    keys = {tuple(r.get(k) for k in KEY) for r in new}
    kept = [r for r in existing if not (r.get("kind") == "export" and tuple(r.get(k) for k in KEY) in keys)]
    return kept + new


def _fmt(v: Any, digits: int = 4) -> str:
    return f"{v:.{digits}f}" if isinstance(v, float) else ("-" if v is None else str(v))


def markdown(records: list[dict[str, Any]]) -> str:
    head = ("| dataset | task | model | precision | F1 PyTorch | F1 bundle | agreement | engine agreement | "
            "max abs logit diff | size MB | export s |\n|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    order = {"fp32": 0, "int8": 1, "fp16": 2}
    for r in sorted(records, key=lambda r: (r["dataset"] or "", r["task"], r["model"], order.get(r["precision"], 9))):
        mt = r["metrics"]
        f1t, f1b, agr = mt.get("torch_f1"), mt.get("f1"), mt.get("agreement")
        diff = mt.get("max_abs_logit_diff")
        if r["task"] == "joint":  # NER figures, then RE figures
            f1t = f"{_fmt(f1t)} / {_fmt(mt.get('re_torch_f1'))}"
            f1b = f"{_fmt(f1b)} / {_fmt(mt.get('re_f1'))}"
            agr = f"{_fmt(agr)} / {_fmt(mt.get('re_agreement'))}"
            diff = f"{diff:.1e} / {mt.get('re_max_abs_logit_diff', 0):.1e}"
        else:
            diff = f"{diff:.1e}"
        rows.append(f"| {r['dataset']} | {r['task']} | {r['model']} | {r['precision']} | {_fmt(f1t)} | {_fmt(f1b)} | {_fmt(agr)} | "
                    f"{_fmt(mt.get('engine_agreement'))} | {diff} | {r['size_mb']:.1f} | {r['export_seconds']:.1f} |")
    return "\n".join([head, *rows])


@click.command()
@click.argument("bundles", nargs=-1, type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="test", show_default=True)
@click.option("--results", "results_json", default=None, type=click.Path(dir_okay=False),
              help="JSON list to merge the records into (e.g. docs/results.json).")
def main(bundles: tuple[str, ...], split: str, results_json: str | None) -> None:
    """Print the export parity table of verified BUNDLES (and merge records into --results)."""
    records = [r for r in (record(Path(b), split) for b in bundles) if r is not None]
    click.echo(markdown(records))
    if results_json:
        path = Path(results_json)
        existing = json.loads(path.read_text()) if path.exists() else []
        if not isinstance(existing, list):
            raise click.ClickException(f"{path} is not a JSON list")
        path.write_text(json.dumps(merge(existing, records), indent=2, ensure_ascii=False) + "\n")
        click.echo(f"{len(records)} records merged into {path}", err=True)


if __name__ == "__main__":
    main()
