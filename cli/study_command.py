"""`nere study`: runs the comparison of ``nere.train.study`` as `nere train` subprocesses,
then rewrites its tables. Each run's output goes to ``OUT/logs/<run>.log``; a run whose
metrics.json exists is skipped, so an interrupted study resumes where it stopped."""
from __future__ import annotations

import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import click

from nere.extras import require
from nere.train.study import is_bert, plan, report_plan, select, write_reports


@click.command()
@click.option("--dataset", required=True, help="conll04, sanwen, ... (any `nere train --dataset` value).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder of run checkpoints and tables.")
@click.option("--only", multiple=True, help="Run only these: a task (ner, re, joint), task-model (re-acnn), or run-name pattern; repeatable or comma-separated.")
@click.option("--epochs-scale", default=1.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Multiply every run's planned epochs (at least 1).")
@click.option("--epochs", default=None, type=click.IntRange(1), help="Override every run's epochs.")
@click.option("--limit", default=None, type=click.IntRange(1), help="Passed on: first N training/dev sentences.")
@click.option("--encoder", default=None, help="Passed on to BERT runs (default: each command's 'auto').")
@click.option("--data-dir", default=None)
@click.option("--device", default="auto", show_default=True)
@click.option("--extra", default="", help="More options for every run, e.g. '--batch-size 8 --max-length 128'.")
@click.option("--threads", default=None, type=click.IntRange(1),
              help="OMP_NUM_THREADS for each run (1 avoids oversubscribed threads on a small shared machine).")
@click.option("--record", type=click.Path(dir_okay=False), default=None,
              help="Also merge the records into this JSON list (e.g. docs/results.json), replacing same task+dataset+model+weights.")
@click.option("--candidates", default="all", show_default=True, type=click.Choice(["all", "annotated"]),
              help="RE runs' candidate pairs (`nere train re --candidates`); annotated runs have their own names.")
@click.option("--dry-run", is_flag=True, help="List the runs and their commands; train nothing.")
@click.option("--tables-only", is_flag=True, help="Rewrite results.json and tables.md from the runs done; train nothing.")
def study(dataset: str, out_dir: str, only: tuple[str, ...], epochs_scale: float, epochs: int | None, limit: int | None,
          encoder: str | None, data_dir: str | None, device: str, extra: str, threads: int | None, record: str | None,
          candidates: str, dry_run: bool, tables_only: bool) -> None:
    """Run the model comparison (resumable) and write OUT/tables.md and OUT/results.json."""
    out = Path(out_dir)
    try:
        runs = select(plan(dataset, candidates), only)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--only") from None
    if not (dry_run or tables_only):  # every run would fail the same way: say it once
        require("`nere study`", "train")
    common = ["--device", device] + (["--limit", str(limit)] if limit else []) + (["--data-dir", data_dir] if data_dir else [])
    common += shlex.split(extra)
    failed = []
    if not tables_only:
        out.mkdir(parents=True, exist_ok=True)
        (out / "logs").mkdir(exist_ok=True)
    for i, run in enumerate(runs, 1):
        if tables_only:
            break
        n_epochs = epochs or max(1, math.ceil(run.epochs * epochs_scale))
        argv = run.argv(dataset, out, n_epochs, common + (["--encoder", encoder] if encoder and is_bert(run.task, run.model) else []))
        shown = "nere " + " ".join(shlex.quote(a) for a in argv)
        if (out / run.name / "metrics.json").is_file():
            click.echo(f"[{i}/{len(runs)}] {run.name}: done already, skipped")
            continue
        click.echo(f"[{i}/{len(runs)}] {run.name}: {shown}")
        if dry_run:
            continue
        started = time.perf_counter()
        log = out / "logs" / f"{run.name}.log"
        env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
        with log.open("w") as fh:
            rc = subprocess.call([sys.executable, "-m", "nere.cli", *argv], stdout=fh, stderr=subprocess.STDOUT, env=env)
        took = time.perf_counter() - started
        if rc != 0 or not (out / run.name / "metrics.json").is_file():
            failed.append(run.name)
            click.echo(f"  failed (exit {rc}, {took:.0f}s): see {log}", err=True)
        else:
            click.echo(f"  done in {took:.0f}s")
    if dry_run:
        return
    if not out.is_dir():
        raise click.ClickException(f"{out} does not exist: nothing to tabulate")
    # tables cover the whole plan ('-' where a run is not done), whatever --only picked
    try:
        records = write_reports(out, report_plan(dataset), dataset, Path(record) if record else None)
    except ValueError as err:  # --record names a file that is not a list of records
        raise click.ClickException(str(err)) from None
    click.echo(f"{len(records)} runs tabulated -> {out / 'tables.md'}, {out / 'results.json'}")
    if failed:
        raise click.ClickException(f"{len(failed)} run(s) failed: {', '.join(failed)}")
