"""`nere export CHECKPOINT --out BUNDLE`: checkpoint -> verified ONNX bundle."""
from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

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
              "whose F1 stays within half the int8 tolerance of PyTorch on the dev split of "
              "--verify's dataset; if none does, the most accurate of those measured")
@click.option("--verify", "dataset", default=None, help="Check the bundle against PyTorch on this dataset (conll04, msra, sanwen, or JSONL path).")
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
    engine, and record them in the manifest (exit 1 when parity fails)."""
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
    calibration = _calibration(dataset, data_dir, featurizer, required=int8_policy != "auto") if calibrate else None
    selection = None
    if int8_policy == "auto":
        dev = _load_examples(dataset, "dev", limit, data_dir)
        int8_policy, selection = _choose_int8_policy(model, featurizer, config, Path(checkpoint),
                                                     Path(out_dir), dev, batch_size, threads, quiet, calibration)
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
    from nere.export.verify import summary, verify_bundle

    started = time.perf_counter()
    result = verify_bundle(str(out), model, featurizer, examples, batch_size, progress=not quiet, threads=threads)
    metrics = summary(result, precision)
    metrics.update(dataset=dataset, split=split, limit=limit, verify_seconds=round(time.perf_counter() - started, 2))
    set_metrics(out, split, metrics)
    write_card(out)
    _report(result, metrics)
    if not metrics["passed"]:
        raise click.ClickException(f"parity check failed for {out}: {'; '.join(metrics['problems'])} "
                                   "(the bundle was written; its manifest records the failure)")


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
                        calibration: dict[str, list] | None = None) -> tuple[str, dict[str, Any]]:
    """Export each candidate policy to a scratch folder, verify it on ``dev``, and pick the
    first (fastest) whose F1 stays within a margin of the int8 tolerance (dev and test are
    small; see AUTO_DEV_SHARE); the record says what each one measured."""
    import shutil

    from nere.export.bundle import write_bundle
    from nere.export.verify import THRESHOLDS, verify_bundle
    from nere.train.checkpoint import TOKENIZER

    th = THRESHOLDS["int8"]
    limit = th["max_f1_diff"] * AUTO_DEV_SHARE
    tried = []
    chosen = None
    candidates = [p for p in auto_int8_candidates(getattr(model, "encoder_type", ""))
                  if calibration is not None or not needs_calibration(p)]
    for policy in candidates:
        scratch = out.parent / f".{out.name}.int8-{policy}"
        try:
            write_bundle(model, config, checkpoint / TOKENIZER, scratch, "int8", policy, overwrite=True,
                         calibration=calibration, checkpoint=checkpoint)
            result = verify_bundle(str(scratch), model, featurizer, dev, batch_size, progress=not quiet, threads=threads)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        parts = [result[p] for p in ("ner", "re") if result.get(p)]
        ok = all(r["f1_diff"] <= limit and r["agreement"] >= th["min_agreement"] for r in parts)
        diffs = {p: round(float(result[p]["f1_diff"]), 5) for p in ("ner", "re") if result.get(p)}
        tried.append({"policy": policy, "passed": ok, "f1_diff": diffs})
        click.echo(f"int8 policy {policy}: dev F1 difference {diffs} (limit {limit:g}) -> {'passes' if ok else 'fails'}",
                   err=True)
        if ok:
            chosen = policy
            break
    if chosen is None:
        chosen = most_accurate_policy(tried)
        click.echo(f"warning: no int8 policy stays within {limit:g} F1 on dev; using the most accurate measured, "
                   f"{chosen}", err=True)
    return chosen, {"split": "dev", "sentences": len(dev), "tolerance": th["max_f1_diff"], "dev_limit": limit,
                    "candidates": tried, "chosen": chosen}


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
    click.echo("parity: " + ("passed" if metrics["passed"] else "FAILED: " + "; ".join(metrics["problems"])))
