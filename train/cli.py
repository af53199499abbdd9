"""`nere train ...` and `nere evaluate`: thin click layers over the task modules."""
from __future__ import annotations

import json
import logging
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import click

from nere.train.registry import model_names

_SHARED = [
    click.option("--dataset", required=True, help="conll04, msra, sanwen, or a path to JSONL data."),
    click.option("--data-dir", default=None, help="Folder holding the datasets (default: $NERE_DATASETS or ../shared/datasets)."),
    click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Checkpoint folder to write."),
    click.option("--epochs", default=10, show_default=True, type=click.IntRange(1)),
    click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1)),
    click.option("--lr", default=None, type=float, help="Learning rate (default 5e-5 for BERT encoders, 1e-3 for BiLSTM)."),
    click.option("--head-lr", default=1e-3, show_default=True, type=float, help="Learning rate of heads and the CRF."),
    click.option("--patience", default=3, show_default=True, type=click.IntRange(1), help="Early stopping: epochs without dev gain."),
    click.option("--seed", default=13, show_default=True, type=int),
    click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda."),
    click.option("--limit", default=None, type=click.IntRange(1), help="Use only the first N training (and dev) sentences."),
    click.option("--encoder", default="auto", show_default=True,
                 help="BERT kinds: a local Hugging Face BERT folder, 'random' (small BERT, character vocabulary) or 'auto'."),
    click.option("--bert-config", default=None, callback=lambda ctx, param, v: _json_object(v, "--bert-config"),
                 help='JSON overrides of the small random BERT (--encoder random), e.g. \'{"num_hidden_layers": 2}\'.'),
    click.option("--max-length", default=256, show_default=True, type=click.IntRange(8), help="Tokens per sentence incl. [CLS]/[SEP]."),
    click.option("--quiet", is_flag=True, help="No progress bars."),
]


def _json_object(value: str | None, name: str) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        obj = json.loads(value)
    except json.JSONDecodeError as err:
        raise click.BadParameter(f"not JSON: {err}", param_hint=name) from None
    if not isinstance(obj, dict):
        raise click.BadParameter("expected a JSON object", param_hint=name)
    return obj


def shared_options(f):
    for opt in reversed(_SHARED):
        f = opt(f)
    return f


def hardware() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    import os

    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}"


def command_line() -> str:
    return "nere " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def make_train_config(kind_encoder: str, opts: dict[str, Any]):
    from nere.train.trainer import TrainConfig, resolve_device

    lr = opts["lr"] if opts["lr"] is not None else (5e-5 if kind_encoder == "bert" else 1e-3)
    head_lr = opts["head_lr"] if kind_encoder == "bert" else lr
    return TrainConfig(epochs=opts["epochs"], batch_size=opts["batch_size"], lr=lr, head_lr=head_lr,
                       patience=opts["patience"], seed=opts["seed"], device=resolve_device(opts["device"]),
                       progress=not opts["quiet"])


def run_metrics(task: str, model: str, opts: dict[str, Any], splits, result: dict[str, Any], test: dict[str, Any],
                make, notes: dict[str, Any], cfg, started: float, **extra: Any) -> dict[str, Any]:
    """The metrics.json of a training run: one shape for every task (study and cards read it)."""
    return {
        "task": task, "model": model, "dataset": opts["dataset"], **extra,
        "split_sizes": [len(s) for s in splits],
        "dev": result["best_dev"], "test": test, "history": result["history"], "best_epoch": result["best_epoch"],
        "train_featurization": make.stats, "notes": notes, "command": command_line(), "hardware": hardware(),
        "seconds": time.perf_counter() - started, "train_config": cfg.__dict__,
    }


def load_splits(dataset: str, data_dir: str | None, limit: int | None, splits=("train", "dev")):
    from nere.train.datasets import load_dataset

    try:
        return [load_dataset(dataset, s, limit=limit, data_dir=data_dir) for s in splits]
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err)) from err


@click.group()
def train() -> None:
    """Train an NER, RE or joint model into a checkpoint folder."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")


@train.command("ner")
@click.option("--model", "kind", required=True, help="One of: " + ", ".join(model_names("ner")) + ".")
@click.option("--tag-scheme", default="BIOES", show_default=True, type=click.Choice(["BIO", "BIOES"], case_sensitive=False))
@shared_options
def train_ner(kind: str, tag_scheme: str, **opts: Any) -> None:
    """Train an NER model; select the epoch on dev F1; report test scores."""
    from nere.train.checkpoint import save_checkpoint
    from nere.train.ner_task import build_ner, evaluate_ner, ner_batches
    from nere.train.trainer import fit

    if kind not in model_names("ner"):
        raise click.BadParameter(f"unknown NER model {kind!r}; choose one of {', '.join(model_names('ner'))}", param_hint="--model")
    train_ex, dev_ex = load_splits(opts["dataset"], opts["data_dir"], opts["limit"])
    (test_ex,) = load_splits(opts["dataset"], opts["data_dir"], None, ("test",))
    try:
        model, tokenizer, featurizer, notes = build_ner(kind, train_ex, opts["encoder"], opts["max_length"], tag_scheme.upper(),
                                                        bert_size=opts["bert_config"])
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err)) from err
    cfg = make_train_config(type(model).encoder_type, opts)
    make = ner_batches(model, featurizer, train_ex, cfg.batch_size)
    click.echo(f"{kind}: {len(train_ex)} train / {len(dev_ex)} dev / {len(test_ex)} test sentences; "
               f"{sum(p.numel() for p in model.parameters()):,} parameters; device {cfg.device}")
    started = time.perf_counter()
    result = fit(model, make, lambda m: evaluate_ner(m, featurizer, dev_ex), "f1", cfg)
    test = evaluate_ner(model, featurizer, test_ex)
    metrics = run_metrics("ner", kind, opts, (train_ex, dev_ex, test_ex), result, test, make, notes, cfg, started)
    save_checkpoint(model, tokenizer, opts["out_dir"], metrics)
    click.echo(f"test: accuracy {test['accuracy']:.4f}  P {test['precision']:.4f}  R {test['recall']:.4f}  F1 {test['f1']:.4f}"
               f"  ({metrics['seconds']:.0f}s) -> {opts['out_dir']}")


def register_subcommand(command: click.Command) -> None:
    """Let task modules (RE, joint) add `nere train <task>` without editing this file's group."""
    train.add_command(command)


def _print_scores(metrics: dict[str, Any]) -> None:
    for section, m in metrics.items():
        if not isinstance(m, dict):
            continue
        head = "  ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float))
        click.echo(f"{section}: {head}")
        for label, row in (m.get("per_label") or {}).items():
            click.echo(f"  {label:<16} P {row['precision']:.4f}  R {row['recall']:.4f}  F1 {row['f1']:.4f}  n={row['support']}")


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.option("--dataset", required=True, help="conll04, msra, sanwen, or a path to JSONL data.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "dev", "test"]))
@click.option("--data-dir", default=None)
@click.option("--limit", default=None, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate(checkpoint: str, dataset: str, split: str, data_dir: str | None, limit: int | None, as_json: bool) -> None:
    """Score a checkpoint on a dataset split (token accuracy, strict entity P/R/F1, RE and end-to-end scores),
    or a bundle through the engine (entities, triples: the figures `nere export --verify` records)."""
    from nere.train.evaluators import evaluate_checkpoint

    (examples,) = load_splits(dataset, data_dir, limit, (split,))
    try:
        if (Path(checkpoint) / "manifest.json").is_file():  # a bundle
            from nere.engine.score import score_bundle
            from nere.train.datasets.policy import flat_entities

            gold = [[(e.start, e.end, e.label) for e in flat_entities(ex.entities)[0]] for ex in examples]
            metrics = score_bundle(checkpoint, examples, gold, device="cpu")
        else:
            metrics = evaluate_checkpoint(checkpoint, examples)
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err)) from err
    if as_json:
        click.echo(json.dumps(metrics, indent=2, ensure_ascii=False))
    else:
        _print_scores(metrics)


# `nere train re` and `nere train joint`: the task modules register their commands on import
from nere.train import joint_task, re_task  # noqa: E402,F401
