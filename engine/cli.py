"""``nere extract``: Parquet corpora in, entity and relation tables out (see docs/engine.md)."""
from __future__ import annotations

from typing import Any

import click

from nere.engine.errors import EngineError

ALL_FAILED_EXIT = 3  # every document failed: the run wrote its tables, but nothing was extracted


class AllFailed(click.ClickException):
    """Every input row failed (null, blank or too long texts, say): a non-zero exit for scripts."""

    exit_code = ALL_FAILED_EXIT


def _print_summary(s: dict[str, Any]) -> None:
    failed = f"{s['documents_failed']:,} failed"
    if s["failure_reasons"]:
        failed += " (" + ", ".join(f"{k}: {v:,}" for k, v in s["failure_reasons"].items()) + ")"
    lines = [
        f"documents: {s['documents_read']:,} read, {s['documents_written']:,} written, {failed}",
        f"entities: {s['entities']:,}   relations: {s['relations']:,}   tokens: {s['tokens']:,}",
        f"time: {s['seconds']:.1f} s for {s['documents_this_run']:,} documents this run"
        + (f" ({s['documents_per_second']:,.0f} docs/s, {s['tokens_per_second']:,.0f} tokens/s)"
           if s["documents_this_run"] else "")
        + (f"; {s['documents_before_resume']:,} done before resuming" if s["resumed"] else ""),
        f"provider: {s['provider']} (device {s['device']}, batch_tokens {s['batch_tokens']})",
        f"bundle: {s['bundle']['path']} sha256 {s['bundle']['sha256']}",
    ]
    if s["re_bundle"]:
        lines.append(f"re bundle: {s['re_bundle']['path']} sha256 {s['re_bundle']['sha256']}")
    lines += [f"note: {n}" for n in s["provider_notes"]]
    lines.append(f"summary: {s['out_dir']}/summary.json")
    click.echo("\n".join(lines))


@click.command("extract")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--model", "-m", "model", required=True, help="NER or joint bundle folder.")
@click.option("--re-model", default=None, help="Separate RE bundle run on the NER bundle's entities.")
@click.option("--out", "-o", "out", required=True, help="Output folder (entities/, relations/, failures/, summary.json).")
@click.option("--id-col", default="id", show_default=True, help="Document id column.")
@click.option("--text-col", default="text", show_default=True, help="Document text column.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: CUDA when onnxruntime can use it, else CPU. cuda: fail rather than fall back.")
@click.option("--batch-tokens", type=click.IntRange(1), default=None,
              help="Padded tokens per model batch [default: 65536 on CUDA; on CPU 1024 for a recurrent (BiLSTM) bundle, else 2048].")
@click.option("--threads", type=click.IntRange(1), default=None, help="onnxruntime CPU threads [default: all cores].")
@click.option("--streams", type=click.IntRange(1), default=None,
              help="Model calls at once, each with threads/streams threads [default: 2 for bundles with a "
                   "recurrent (BiLSTM) stage 1 or no [CLS] token on 2+ threads, else 1].")
@click.option("--re-streams", type=click.IntRange(1), default=None,
              help="The same for the --re-model bundle's calls [default: 2 for its BiLSTM and ACNN kinds on 2+ "
                   "threads, 1 for BERT-style ones].")
@click.option("--resume", is_flag=True, help="Continue a killed run in --out; finished parts are kept.")
@click.option("--overwrite", is_flag=True, help="Replace the results already in --out.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N input rows.")
@click.option("--max-doc-chars", type=click.IntRange(1), default=1_000_000, show_default=True,
              help="Longer documents are reported as failed rows, not processed.")
@click.option("--part-docs", type=click.IntRange(1), default=50_000, show_default=True,
              help="Documents per part file (a killed run redoes at most one part).")
@click.option("--line-breaks", type=click.Choice(["split", "join"]), default="split", show_default=True,
              help="split: a line break ends a sentence (headings, lists, signatures); join: text whose "
                   "lines are wrapped mid-sentence.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@click.option("--preview", type=click.IntRange(0), default=0, show_default=True,
              help="Print the first N rows of the entity and relation tables when done.")
@click.option("--ray", "ray_address", default=None, is_flag=False, flag_value="auto", metavar="[auto|ADDRESS]",
              help="Run on a Ray cluster (pip install 'nere[ray]'); inputs and --out on storage every node sees. "
                   "See docs/scale.md.")
@click.option("--actors", type=click.IntRange(1), default=None,
              help="With --ray: engine actors [default: one per node on CPU, one per GPU with --device cuda].")
def extract(inputs, model, re_model, out, id_col, text_col, device, batch_tokens, threads, streams, re_streams, resume,
            overwrite, limit, max_doc_chars, part_docs, line_breaks, progress, preview, ray_address, actors) -> None:
    """Extract entities (and relations) from the Parquet files or folders INPUT...

    Exit status: 0 when done; 1 on an error (bad input, bundle or --out, or --out in use by
    another run); 3 when every document failed (the tables, failures/ and summary.json are
    still written)."""
    from nere.engine.api import Engine
    from nere.engine.config import EngineConfig

    try:
        # the CLI owns its process, so it tunes the allocator (NERE_TUNE_ALLOCATOR=0 opts out)
        config = EngineConfig(device=device, threads=threads, streams=streams, re_streams=re_streams,
                              batch_tokens=batch_tokens, max_doc_chars=max_doc_chars, part_docs=part_docs,
                              line_breaks=line_breaks, tune_allocator=True)
        if ray_address is not None or actors is not None:
            from nere.engine.cluster.cli import run_from_cli

            summary = run_from_cli(ray_address, actors, inputs, model, re_model, out, id_col, text_col, config,
                                   resume, overwrite, limit, progress)
            _print_summary(summary)
            return _print_preview(out, preview) if preview else None
        engine = Engine.load(model, re_model, config)
        summary = engine.run(list(inputs), out, id_col=id_col, text_col=text_col, resume=resume,
                             overwrite=overwrite, limit=limit, progress=progress)
    except EngineError as err:
        raise click.ClickException(str(err)) from None
    _print_summary(summary)
    if preview:
        _print_preview(out, preview)
    read, failed = summary["documents_read"], summary["documents_failed"]
    if read and failed == read:
        reasons = ", ".join(f"{k}: {v:,}" for k, v in summary["failure_reasons"].items())
        raise AllFailed(f"all {read:,} documents failed ({reasons}); see {summary['failures_table']}")


def _print_preview(out: str, rows: int) -> None:
    """The first rows of each output table, read back from the part files just written."""
    from pathlib import Path

    import pyarrow.parquet as pq

    for table in ("entities", "relations"):
        parts = sorted((Path(out) / table).glob("*.parquet"))
        click.echo(f"\n{table} (first {rows} rows of {sum(pq.ParquetFile(p).metadata.num_rows for p in parts):,}):")
        shown = 0
        for part in parts:
            for row in pq.read_table(part).slice(0, rows - shown).to_pylist():
                click.echo("  " + "  ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v:.3f}" if isinstance(v, float)
                                            else f"{k}={v}" for k, v in row.items()))
                shown += 1
            if shown >= rows:
                break
