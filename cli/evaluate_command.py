"""`nere evaluate`: scores a checkpoint (PyTorch, the [train] extra) or a bundle (through
the engine, no torch) on a dataset split."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from nere.extras import require
from nere.splits import load_splits


def _print_scores(metrics: dict[str, Any]) -> None:
    for section, m in metrics.items():
        if not isinstance(m, dict):
            continue
        head = "  ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float))
        click.echo(f"{section}: {head}")
        for label, row in (m.get("per_label") or {}).items():
            click.echo(f"  {label:<16} P {row['precision']:.4f}  R {row['recall']:.4f}  F1 {row['f1']:.4f}  n={row['support']}")


def _score_bundle(bundle: str, examples, re_bundle: str | None = None) -> dict[str, Any]:
    from nere.engine.score import score_bundle
    from nere.train.datasets.policy import flat_entities

    gold = [[(e.start, e.end, e.label) for e in flat_entities(ex.entities)[0]] for ex in examples]
    return score_bundle(bundle, examples, gold, re_bundle=re_bundle, device="cpu")


def _record(bundle: str, metrics: dict[str, Any], dataset: str, split: str, limit: int | None,
            re_model: str | None) -> None:
    """Keep the engine scores in the bundle's manifest and rewrite its model card."""
    import shlex
    import sys
    from datetime import datetime, timezone

    from nere.engine.manifest import Manifest
    from nere.export.card import write_card

    m = Manifest.read(bundle)
    m.with_evaluation({
        "dataset": dataset, "split": split, "limit": limit, "re_model": re_model,
        "documents": metrics.get("documents"), "entities": metrics.get("entities"), "triples": metrics.get("triples"),
        "command": "nere " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["evaluate"]
        else f"nere evaluate {bundle} --dataset {dataset} --split {split} --record",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }).write(bundle)
    write_card(bundle)


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.option("--dataset", required=True, help="conll04, msra, sanwen, or a path to JSONL data.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "dev", "test"]))
@click.option("--data-dir", default=None)
@click.option("--limit", default=None, type=click.IntRange(1))
@click.option("--re-model", default=None, type=click.Path(exists=True, file_okay=False),
              help="A bundle: a separate RE bundle run on its entities, as `nere extract --re-model` does.")
@click.option("--record", is_flag=True,
              help="A bundle: keep the scores in its manifest (`evaluations`) and model card.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate(checkpoint: str, dataset: str, split: str, data_dir: str | None, limit: int | None,
             re_model: str | None, record: bool, as_json: bool) -> None:
    """Score a checkpoint on a dataset split (token accuracy, strict entity P/R/F1, RE and end-to-end scores),
    or a bundle through the engine (entities, triples: the figures `nere export --verify` records)."""
    is_bundle = (Path(checkpoint) / "manifest.json").is_file()
    if not is_bundle:
        if re_model is not None or record:
            raise click.BadParameter("--re-model and --record apply to a bundle, not a checkpoint",
                                     param_hint="--re-model" if re_model is not None else "--record")
        require("`nere evaluate CHECKPOINT`", "train")
    (examples,) = load_splits(dataset, data_dir, limit, (split,))
    try:
        if is_bundle:
            metrics = _score_bundle(checkpoint, examples, re_model)
        else:
            from nere.train.evaluators import evaluate_checkpoint

            metrics = evaluate_checkpoint(checkpoint, examples)
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err)) from err
    if record:
        _record(checkpoint, metrics, dataset, split, limit, re_model)
    if as_json:
        click.echo(json.dumps(metrics, indent=2, ensure_ascii=False))
    else:
        _print_scores(metrics)
