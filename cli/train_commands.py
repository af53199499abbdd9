"""`nere train ner|re|joint`: thin click layers over the task modules.

The task modules (``nere.train.ner_task``, ``re_task``, ``joint_task``) are plain
functions; every option, message and exit code of the training commands lives here.
Importing this module imports torch: ``nere.cli`` checks the [train] extra first.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

import click

from nere.feature_options import feature_options, feature_request
from nere.splits import load_splits
from nere.train.re_features import CANDIDATE_SETS
from nere.train.re_task import DEFAULT_NEG_RATIO
from nere.train.registry import model_names


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

_HEAD = [
    click.option("--neg-ratio", default=DEFAULT_NEG_RATIO, show_default=True, type=float,
                 help="Training negatives per positive pair and sentence, resampled each epoch; 0 or -1: all."),
    click.option("--transe-weight", default=0.5, show_default=True, type=click.FloatRange(0),
                 help="Weight of the TransE margin loss (multitask heads)."),
    click.option("--margin", default=1.0, show_default=True, type=click.FloatRange(0), help="TransE margin."),
    click.option("--dropout", default=None, type=click.FloatRange(0, 1), help="Default 0.1 (BERT) or 0.3 (BiLSTM/ACNN)."),
]


def _apply(options: list[Callable]) -> Callable:
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f

    return deco


shared_options = _apply(_SHARED)  # every `nere train` task
head_options = _apply(_HEAD)  # the RE heads: `nere train re` and `nere train joint`


# ------------------------------------------------------------------ helpers of every task
def hardware() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
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


def _train_dev_test(opts: dict[str, Any]):
    train_ex, dev_ex = load_splits(opts["dataset"], opts["data_dir"], opts["limit"])
    (test_ex,) = load_splits(opts["dataset"], opts["data_dir"], None, ("test",))
    return train_ex, dev_ex, test_ex


def _built(build: Callable, *args: Any, **kwargs: Any):
    """A task's ``build_*`` with its user errors (bad encoder folder, bad labels) as one line."""
    try:
        return build(*args, **kwargs)
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err)) from err


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------ nere train
@click.group()
def train() -> None:
    """Train an NER, RE or joint model into a checkpoint folder."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")


@train.command("ner")
@click.option("--model", "kind", required=True, help="One of: " + ", ".join(model_names("ner")) + ".")
@click.option("--tag-scheme", default="BIOES", show_default=True, type=click.Choice(["BIO", "BIOES"], case_sensitive=False))
@feature_options
@shared_options
def train_ner(kind: str, tag_scheme: str, **opts: Any) -> None:
    """Train an NER model; select the epoch on dev F1; report test scores."""
    from nere.train.checkpoint import save_checkpoint
    from nere.train.ner_task import build_ner, evaluate_ner, ner_batches
    from nere.train.trainer import fit

    if kind not in model_names("ner"):
        raise click.BadParameter(f"unknown NER model {kind!r}; choose one of {', '.join(model_names('ner'))}", param_hint="--model")
    train_ex, dev_ex, test_ex = _train_dev_test(opts)
    model, tokenizer, featurizer, notes = _built(build_ner, kind, train_ex, opts["encoder"], opts["max_length"],
                                                 tag_scheme.upper(), bert_size=opts["bert_config"],
                                                 features=feature_request(opts))
    cfg = make_train_config(type(model).encoder_type, opts)
    make = ner_batches(model, featurizer, train_ex, cfg.batch_size)
    click.echo(f"{kind}: {len(train_ex)} train / {len(dev_ex)} dev / {len(test_ex)} test sentences; "
               f"{_params(model):,} parameters; device {cfg.device}")
    started = time.perf_counter()
    result = fit(model, make, lambda m: evaluate_ner(m, featurizer, dev_ex), "f1", cfg)
    test = evaluate_ner(model, featurizer, test_ex)
    metrics = run_metrics("ner", kind, opts, (train_ex, dev_ex, test_ex), result, test, make, notes, cfg, started)
    save_checkpoint(model, tokenizer, opts["out_dir"], metrics)
    click.echo(f"test: accuracy {test['accuracy']:.4f}  P {test['precision']:.4f}  R {test['recall']:.4f}  F1 {test['f1']:.4f}"
               f"  ({metrics['seconds']:.0f}s) -> {opts['out_dir']}")


@train.command("re")
@click.option("--model", "kind", required=True, type=click.Choice(model_names("re")), help="RE model kind.")
@head_options
@click.option("--max-distance", default=30, show_default=True, type=click.IntRange(1),
              help="BiLSTM/ACNN: relative positions are clipped to +-N tokens.")
@click.option("--candidates", default="all", show_default=True, type=click.Choice(CANDIDATE_SETS),
              help="Pairs to train and score: every ordered entity pair, or only the gold-relation pairs "
                   "(classified among the relation labels, the published sentence-level setup).")
@shared_options
def train_re(kind: str, neg_ratio: float, transe_weight: float, margin: float, dropout: float | None,
             max_distance: int, candidates: str, **opts: Any) -> None:
    """Train a relation classifier on gold entities; select the epoch on dev macro F1."""
    from nere.train.checkpoint import save_checkpoint
    from nere.train.re_task import build_re, evaluate_re, re_batches
    from nere.train.trainer import fit

    train_ex, dev_ex, test_ex = _train_dev_test(opts)
    head = {"transe_weight": transe_weight, "margin": margin, "max_distance": max_distance}
    model, tokenizer, featurizer, notes = _built(build_re, kind, train_ex, opts["encoder"], opts["max_length"], dropout, head)
    model.config["candidates"] = candidates
    cfg = make_train_config(type(model).encoder_type, opts)
    make = re_batches(model, featurizer, train_ex, cfg.batch_size, neg_ratio)
    click.echo(f"re/{kind}: {len(train_ex)} train / {len(dev_ex)} dev / {len(test_ex)} test sentences; "
               f"{make.stats['pairs']} train pairs ({make.stats['positive']} positive); "
               f"{_params(model):,} parameters; device {cfg.device}")
    started = time.perf_counter()
    result = fit(model, make, lambda m: evaluate_re(m, featurizer, dev_ex), "macro_f1", cfg)
    test = evaluate_re(model, featurizer, test_ex)
    metrics = run_metrics("re", kind, opts, (train_ex, dev_ex, test_ex), result, test, make, notes, cfg, started,
                          neg_ratio=neg_ratio, head=head, candidates=candidates)
    save_checkpoint(model, tokenizer, opts["out_dir"], metrics)
    click.echo(f"test: accuracy {test['accuracy']:.4f}  macro P {test['macro_precision']:.4f}  R {test['macro_recall']:.4f}  "
               f"F1 {test['macro_f1']:.4f}  micro F1 {test['micro_f1']:.4f}  ({metrics['seconds']:.0f}s) -> {opts['out_dir']}")


@train.command("joint")
@click.option("--ner-weight", default=1.0, show_default=True, type=click.FloatRange(0), help="a in a*ner + b*re + c*transe.")
@click.option("--re-weight", default=1.0, show_default=True, type=click.FloatRange(0), help="b in a*ner + b*re + c*transe.")
@click.option("--learned-weights", is_flag=True, help="Learn the weights (uncertainty weighting, Kendall et al. 2018).")
@click.option("--tag-scheme", default="BIOES", show_default=True, type=click.Choice(["BIO", "BIOES"], case_sensitive=False))
@click.option("--case-features", is_flag=True,
              help="Add a letter-case class per token beside the encoder output, for the tagger: for uncased encoders.")
@head_options
@shared_options
def train_joint(ner_weight: float, re_weight: float, learned_weights: bool, tag_scheme: str, case_features: bool,
                neg_ratio: float, transe_weight: float, margin: float, dropout: float | None, **opts: Any) -> None:
    """Train BERT-CRF NER + multitask RE jointly; select the epoch on dev end-to-end triple F1."""
    from nere.train.checkpoint import save_checkpoint
    from nere.train.joint_task import KIND, build_joint, evaluate_joint, joint_batches, weights_label
    from nere.train.trainer import fit

    train_ex, dev_ex, test_ex = _train_dev_test(opts)
    weights = {"ner": ner_weight, "re": re_weight, "transe": transe_weight}
    head = {"transe_weight": transe_weight, "margin": margin}
    model, tokenizer, featurizer, notes = _built(build_joint, train_ex, opts["encoder"], opts["max_length"],
                                                 tag_scheme.upper(), dropout, head, weights, learned_weights,
                                                 case_features=case_features)
    cfg = make_train_config("bert", opts)
    make = joint_batches(model, featurizer, train_ex, cfg.batch_size, neg_ratio)
    label = "learned" if learned_weights else weights_label(weights)
    click.echo(f"joint/{KIND} ({label}): {len(train_ex)} train / {len(dev_ex)} dev / {len(test_ex)} test sentences; "
               f"{_params(model):,} parameters; device {cfg.device}")
    started = time.perf_counter()
    result = fit(model, make, lambda m: evaluate_joint(m, featurizer, dev_ex), "e2e_f1", cfg)
    test = evaluate_joint(model, featurizer, test_ex)
    recorded = {"learned": True, "initial": weights, "final": model.task_weights()} if learned_weights else weights
    metrics = run_metrics("joint", KIND, opts, (train_ex, dev_ex, test_ex), result, test, make, notes, cfg, started,
                          weights=recorded, weights_label=label, neg_ratio=neg_ratio, head=head)
    save_checkpoint(model, tokenizer, opts["out_dir"], metrics)
    click.echo(f"test: NER F1 {test['ner']['f1']:.4f}  RE macro F1 {test['re']['macro_f1']:.4f}  "
               f"end-to-end F1 {test['e2e_f1']:.4f}  weights {test['weights']}  ({metrics['seconds']:.0f}s) -> {opts['out_dir']}")


@train.command("qat")
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.option("--dataset", required=True,
              help="conll04, msra, sanwen, or a path to JSONL data (its train split trains, dev selects).")
@click.option("--data-dir", default=None, help="Folder holding the datasets (default: $NERE_DATASETS or ../shared/datasets).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Checkpoint folder to write.")
@click.option("--epochs", default=2, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=1e-5, show_default=True, type=float, help="Learning rate of the encoder.")
@click.option("--head-lr", default=None, type=float, help="Learning rate of heads and the CRF (default: --lr).")
@click.option("--neg-ratio", default=None, type=float,
              help="RE negatives per positive pair (default: the checkpoint's training run's).")
@click.option("--patience", default=2, show_default=True, type=click.IntRange(1),
              help="Early stopping: epochs without dev gain.")
@click.option("--seed", default=13, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--limit", default=None, type=click.IntRange(1), help="Use only the first N training (and dev) sentences.")
@click.option("--avx2-saturation", is_flag=True,
              help="Also round as onnxruntime's u8 x s8 kernel does on x86 CPUs without VNNI (AVX2 only): "
                   "neighbouring products summed into a saturating int16. For int8 bundles that will run on such CPUs.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train_qat(checkpoint: str, avx2_saturation: bool, **opts: Any) -> None:
    """Fine-tune CHECKPOINT through int8 rounding (quantization-aware), for `nere export --precision int8`.

    Every MatMul the int8 export quantizes is fake-quantized as onnxruntime will run it;
    the task's own loss trains and its dev score (computed through the same rounding)
    selects the epoch. The new checkpoint holds plain float weights, exported as usual."""
    import torch

    from nere.train.checkpoint import METRICS, load_checkpoint, save_checkpoint
    from nere.train.qat import task_loop, unwrap_linears, wrap_linears
    from nere.train.re_task import DEFAULT_NEG_RATIO
    from nere.train.trainer import fit

    try:
        model, featurizer, config = load_checkpoint(checkpoint)
    except (ValueError, OSError, KeyError) as err:
        raise click.ClickException(f"cannot load checkpoint {checkpoint}: {err}") from err
    source_file = Path(checkpoint) / METRICS
    source = json.loads(source_file.read_text(encoding="utf-8")) if source_file.is_file() else {}
    train_ex, dev_ex, test_ex = _train_dev_test(opts)
    neg_ratio = opts["neg_ratio"] if opts["neg_ratio"] is not None else source.get("neg_ratio", DEFAULT_NEG_RATIO)
    opts["head_lr"] = opts["head_lr"] if opts["head_lr"] is not None else opts["lr"]
    cfg = _built(make_train_config, type(model).encoder_type, opts)  # --device cuda without a GPU: one line
    if type(model).encoder_type != "bert":  # make_train_config gives non-BERT kinds one rate: --lr
        cfg.head_lr = cfg.lr
    loop = _built(task_loop, model, featurizer, train_ex, cfg.batch_size, neg_ratio)
    wrapped = wrap_linears(model, int16_pairs=avx2_saturation)
    click.echo(f"qat {config['task']}/{config['model']}: {len(train_ex)} train / {len(dev_ex)} dev sentences; "
               f"{wrapped} Linear layers fake-quantized{' (AVX2 int16 saturation)' if avx2_saturation else ''}; "
               f"device {cfg.device}")
    started = time.perf_counter()
    model.to(cfg.device).eval()
    with torch.no_grad():
        before = loop.evaluate(model, dev_ex)
    click.echo(f"before: dev {loop.score_key} {float(before[loop.score_key]):.4f} (int8 rounding)")
    source_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    result = fit(model, loop.make_batches, lambda m: loop.evaluate(m, dev_ex), loop.score_key, cfg)
    # epoch 0 competes too: fine-tuning that never beats the source's own int8 score keeps the source
    kept = float(before[loop.score_key]) >= float(result["best_dev"][loop.score_key])
    if kept:
        model.load_state_dict(source_state)
        result.update(best_dev=before, best_epoch=0)
    with torch.no_grad():
        test = loop.evaluate(model, test_ex)
    unwrap_linears(model)
    metrics = run_metrics(config["task"], config["model"], opts, (train_ex, dev_ex, test_ex), result, test,
                          loop.make_batches, {"source": source.get("notes", {})}, cfg, started,
                          qat=True, qat_int16_saturation=avx2_saturation, source_checkpoint=checkpoint,
                          kept_source=kept,
                          source_command=source.get("command"), dev_before=before, neg_ratio=neg_ratio,
                          **{k: source[k] for k in ("weights", "weights_label", "head", "candidates") if k in source})
    if isinstance(metrics.get("weights"), dict) and metrics["weights"].get("learned"):
        metrics["weights"] = dict(metrics["weights"], final=model.task_weights())
    model.to("cpu")
    save_checkpoint(model, featurizer.tokenizer, opts["out_dir"], metrics)
    click.echo(f"dev {loop.score_key}: {float(before[loop.score_key]):.4f} -> "
               f"{float(result['best_dev'][loop.score_key]):.4f} (int8 rounding, epoch {result['best_epoch']}"
               f"{': the source kept' if kept else ''})  ({metrics['seconds']:.0f}s) -> {opts['out_dir']}")
