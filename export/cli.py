"""`nere export CHECKPOINT --out BUNDLE`: checkpoint -> verified ONNX bundle."""
from __future__ import annotations

import functools
import json
import logging
import shlex
import shutil
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from nere.export.variants import (
    AUTO_DEV_SHARE,
    AUTO_INT8_CANDIDATES,
    DEFAULT_INT8_POLICY,
    INT8_POLICIES,
    PRECISIONS,
    auto_int8_candidates,
    most_accurate_policy,
    needs_calibration,
)


def _command_line() -> str:
    """The command as typed (``nere export ...``), or rebuilt from the parsed options."""
    if len(sys.argv) > 1 and sys.argv[1] == "export":
        return "nere " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    ctx = click.get_current_context()
    opts = " ".join(f"--{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in ctx.params.items()
                    if v not in (None, False) and k != "checkpoint")
    return f"nere export {shlex.quote(str(ctx.params.get('checkpoint')))} {opts}"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Bundle folder to write.")
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(PRECISIONS),
              help="fp32; int8 (CPU; full-smooth and full-static calibrate on --verify's training split); fp16 (GPU).")
@click.option("--int8-policy", default=DEFAULT_INT8_POLICY, show_default=True,
              type=click.Choice([*INT8_POLICIES, "auto"]),
              help="Which weight MatMuls stay fp32 in int8: " + "; ".join(f"{k}: {v}" for k, v in INT8_POLICIES.items())
              + f"; auto: the first of {', '.join(AUTO_INT8_CANDIDATES)} (fastest first; none is tried for all but "
              "BERT encoders, full-smooth for BERT encoders only and when the dataset has a training split) "
              f"whose F1 through the engine (entities, triples) loses at most {AUTO_DEV_SHARE:g} of the int8 "
              "tolerance against the fp32 bundle on the dev split of --verify's dataset (one-sided: a gain is "
              "not a loss); if none does, the one whose worst loss is smallest")
@click.option("--verify", "dataset", default=None, help="Check the bundle against PyTorch on this dataset (conll04, msra, sanwen, or JSONL path); "
              "an int8 bundle is judged against its fp32 bundle through the engine.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "dev", "test"]))
@click.option("--limit", default=None, type=click.IntRange(1), help="Verify on the first N sentences only.")
@click.option("--data-dir", default=None, help="Folder holding the datasets (default: $NERE_DATASETS or ../shared/datasets).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1), help="Sentences per verification batch.")
@click.option("--threads", default=None, type=click.IntRange(1), help="onnxruntime threads for verification (default: all cores).")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle folder.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def export(checkpoint: str, out_dir: str, precision: str, int8_policy: str, dataset: str | None, split: str,
           limit: int | None, data_dir: str | None, batch_size: int, threads: int | None, overwrite: bool,
           quiet: bool) -> None:
    """Export CHECKPOINT to an ONNX bundle (docs/bundle-format.md) with its model card
    (README.md); with --verify, measure its parity with PyTorch and its scores through the
    engine (int8: also the fp32 bundle's, which int8 is judged against), and record them in
    the manifest (exit 1 when the gate fails)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from nere.export.bundle import set_metrics, write_bundle
    from nere.export.card import write_card
    from nere.train.checkpoint import TOKENIZER, load_checkpoint

    if int8_policy == "auto" and precision != "int8":
        raise click.BadParameter("auto chooses an int8 policy: use it with --precision int8", param_hint="--int8-policy")
    if int8_policy == "auto" and not dataset:
        raise click.BadParameter("auto chooses the policy on the dev split of a dataset: add --verify DATASET",
                                 param_hint="--int8-policy")
    calibrate = precision == "int8" and (int8_policy == "auto" or needs_calibration(int8_policy))
    if calibrate and not dataset:
        raise click.BadParameter(f"{int8_policy} calibrates on the training split of a dataset: add --verify DATASET",
                                 param_hint="--int8-policy")
    examples = _load_examples(dataset, split, limit, data_dir) if dataset else None
    try:
        model, featurizer, config = load_checkpoint(checkpoint)
    except (ValueError, OSError, KeyError) as err:
        raise click.ClickException(f"cannot load checkpoint {checkpoint}: {err}") from err
    say = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    with ExitStack() as scratch:
        # int8 is judged against the fp32 bundle through the engine; an RE-only model has no engine path
        fp32_folder = functools.cache(lambda: scratch.enter_context(  # written on first use
            _scratch_bundle(model, config, Path(checkpoint), Path(out_dir), "fp32")))
        if precision != "int8" or getattr(model, "task", None) == "re":
            fp32_folder = None
        calibration = _calibration(dataset, data_dir, featurizer, required=int8_policy != "auto") if calibrate else None
        selection = None
        if int8_policy == "auto":
            dev = _load_examples(dataset, "dev", limit, data_dir)
            int8_policy, selection = _choose_int8_policy(model, featurizer, config, Path(checkpoint),
                                                         Path(out_dir), dev, batch_size, threads, quiet, calibration,
                                                         fp32_folder)
        try:
            out, manifest = write_bundle(model, config, Path(checkpoint) / TOKENIZER, out_dir, precision, int8_policy,
                                         command=_command_line(), training=_training(Path(checkpoint)),
                                         overwrite=overwrite, progress=say, calibration=calibration,
                                         checkpoint=checkpoint)
        except (ValueError, FileExistsError) as err:
            raise click.ClickException(str(err)) from err
        if selection is not None:
            from nere.export.bundle import set_made_by

            manifest = set_made_by(out, "int8_policy_selection", selection)
        made = manifest["made_by"]
        click.echo(f"{out}: {manifest['task']} {manifest['model']} {precision}, {_mb(made['bundle_bytes'])}, "
                   f"exported in {made['export_seconds']:.1f}s")
        for name in manifest["files"]:
            click.echo(f"  {name:<16} {_mb((out / name).stat().st_size)}")
        if precision == "int8" and not sum(v.get("quantized_nodes", 0) for v in made.get("variant", {}).values()):
            click.echo("note: int8 quantized no node (no encoder weight MatMul or LSTM under this policy); "
                       "the bundle computes in fp32", err=True)
        if examples is None:
            write_card(out)
            return
        from nere.export.verify import engine_scores, summary, verify_bundle

        started = time.perf_counter()
        fp32_engine = engine_scores(fp32_folder(), examples, threads)[0] if fp32_folder is not None else None
        result = verify_bundle(str(out), model, featurizer, examples, batch_size, progress=not quiet, threads=threads,
                               fp32_engine=fp32_engine)
        metrics = summary(result, precision)
        metrics.update(dataset=dataset, split=split, limit=limit, verify_seconds=round(time.perf_counter() - started, 2))
        set_metrics(out, split, metrics)
        write_card(out)
        _report(result, metrics)
        if not metrics["passed"]:
            raise click.ClickException(f"verification failed for {out}: {'; '.join(metrics['problems'])} "
                                       "(the bundle was written; its manifest records the failure)")


@contextmanager
def _scratch_bundle(model: Any, config: dict[str, Any], checkpoint: Path, out: Path, precision: str,
                    policy: str = DEFAULT_INT8_POLICY, calibration: dict[str, list] | None = None) -> Iterator[Path]:
    """A throwaway bundle of the checkpoint in a hidden sibling folder of ``out``, removed on exit."""
    from nere.export.bundle import write_bundle
    from nere.train.checkpoint import TOKENIZER

    scratch = out.parent / (f".{out.name}.{precision}" + (f"-{policy}" if precision == "int8" else ""))
    try:
        write_bundle(model, config, checkpoint / TOKENIZER, scratch, precision, policy, overwrite=True,
                     calibration=calibration, checkpoint=checkpoint)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _training(checkpoint: Path) -> dict[str, Any] | None:
    """The checkpoint's training record (its metrics.json), for made_by.training and the card."""
    from nere.export.card import training_record
    from nere.train.checkpoint import METRICS

    try:
        metrics = json.loads((checkpoint / METRICS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return training_record(metrics) if isinstance(metrics, dict) else None


def _calibration(dataset: str, data_dir: str | None, featurizer: Any, required: bool) -> dict[str, list] | None:
    """Stage-1 calibration batches: the first training sentences of ``dataset``; None when
    it has none and the policy is auto (which then skips the policies that calibrate)."""
    from nere.export.quantize_static import DEFAULT_CALIBRATION_SENTENCES, calibration_feeds

    try:
        train = _load_examples(dataset, "train", DEFAULT_CALIBRATION_SENTENCES, data_dir)
    except click.ClickException as err:
        if required:
            raise click.ClickException(f"calibration needs training sentences: {err.message}") from err
        click.echo(f"note: no training split to calibrate on ({err.message}); auto skips the policies that calibrate",
                   err=True)
        return None
    return {"ner": calibration_feeds(featurizer, [ex.text for ex in train])}


def _choose_int8_policy(model: Any, featurizer: Any, config: dict[str, Any], checkpoint: Path, out: Path,
                        dev: list, batch_size: int, threads: int | None, quiet: bool,
                        calibration: dict[str, list] | None = None,
                        fp32_folder: Callable[[], Path] | None = None) -> tuple[str, dict[str, Any]]:
    """Export each candidate policy to a scratch folder, score it through the engine on
    ``dev``, and pick the first (fastest) whose F1 loss against the fp32 bundle (from
    ``fp32_folder``, scored once) stays within a share of the int8 tolerance (dev and test
    are small; see AUTO_DEV_SHARE); the record says what each one measured. Without an
    engine path (``fp32_folder`` None: an RE-only model) the loss is the relation F1
    difference from PyTorch on gold entities, the rule its verification applies."""
    from nere.export.verify import THRESHOLDS, engine_loss, engine_scores, verify_bundle

    th = THRESHOLDS["int8"]
    tolerance = th["max_engine_loss"] if fp32_folder is not None else th["max_f1_diff"]
    limit = tolerance * AUTO_DEV_SHARE
    fp32_dev = engine_scores(fp32_folder(), dev, threads)[0] if fp32_folder is not None else None
    tried = []
    chosen = None
    candidates = [p for p in auto_int8_candidates(getattr(model, "encoder_type", ""))
                  if calibration is not None or not needs_calibration(p)]
    for policy in candidates:
        with _scratch_bundle(model, config, checkpoint, out, "int8", policy, calibration) as scratch:
            if fp32_dev is not None:
                scores = engine_scores(scratch, dev, threads)[0]
                loss = engine_loss(fp32_dev, scores)
                key, extra = "engine_loss", {"engine_f1": _table_f1(scores)}
            else:
                re = verify_bundle(str(scratch), model, featurizer, dev, batch_size, progress=not quiet,
                                   threads=threads)["re"]
                loss, key, extra = {"re": re["f1_diff"]}, "f1_diff", {}
        ok = all(v <= limit for v in loss.values())  # one-sided; NaN fails
        loss = {k: round(float(v), 5) for k, v in loss.items()}
        tried.append({"policy": policy, "passed": ok, key: loss, **extra})
        what = "dev F1 loss vs fp32 through the engine" if fp32_dev is not None else "dev F1 difference vs PyTorch"
        click.echo(f"int8 policy {policy}: {what} {loss} (limit {limit:g}) -> {'passes' if ok else 'fails'}",
                   err=True)
        if ok:
            chosen = policy
            break
    if chosen is None:
        chosen = most_accurate_policy(tried)
        click.echo(f"warning: no int8 policy stays within {limit:g} F1 on dev; using the most accurate measured, "
                   f"{chosen}", err=True)
    return chosen, {"split": "dev", "sentences": len(dev), "tolerance": tolerance, "dev_limit": limit,
                    **({"fp32_engine_f1": _table_f1(fp32_dev)} if fp32_dev is not None else {}),
                    "candidates": tried, "chosen": chosen}


def _table_f1(scores: dict[str, Any]) -> dict[str, float]:
    """F1 per engine table (entities; triples when the bundle has relations)."""
    return {t: scores[t]["f1"] for t in ("entities", "triples") if scores.get(t) is not None}


def _load_examples(dataset: str, split: str, limit: int | None, data_dir: str | None):
    from nere.train.datasets import load_dataset

    try:
        examples = load_dataset(dataset, split, limit=limit, data_dir=data_dir)
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err)) from err
    if not examples:  # parity on nothing would pass vacuously
        raise click.ClickException(f"--verify {dataset}: split {split!r} has no sentences")
    return examples


def _report(result: dict[str, Any], metrics: dict[str, Any]) -> None:
    for part in ("ner", "re"):
        r = result.get(part)
        if r is None:
            continue
        click.echo(f"{part}: {r['sentences']} sentences, agreement {r['agreement']:.4f}, F1 bundle {r['f1']:.4f} "
                   f"vs PyTorch {r['torch_f1']:.4f}, max abs logit diff {r['max_abs_logit_diff']:.2e}")
        for d in r.get("differing_sentences", []):
            click.echo("  differs: " + json.dumps(d, ensure_ascii=False)[:300])
    head = metrics.get("headline")
    if head:
        click.echo(f"headline: {head['metric']} {head['value']:.4f} (through the {head['through']})")
    if "engine_loss" in metrics:
        loss = ", ".join(f"{t} {v:+.4f}" for t, v in metrics["engine_loss"].items())
        click.echo(f"F1 lost against the fp32 bundle through the engine: {loss} "
                   f"(tolerance {metrics['thresholds']['max_engine_loss']:g})")
    click.echo("parity: " + ("passed" if metrics["passed"] else "FAILED: " + "; ".join(metrics["problems"])))
