"""``nere bench``: latency and throughput of exported bundles, against a PyTorch baseline.

Per bundle (x each ``--batch-tokens`` value) in ONE process, so that numbers taken on a
shared, noisy host compare as ratios: repeats interleave the models (and the baseline),
medians are reported, warm-up passes are excluded.

- end to end: ``Engine.run`` over the corpus (read -> tables written as Parquet);
- model only: the same stage-1/stage-2 calls on pre-tokenized, pre-batched inputs
  (recorded from the engine's own pipeline, then replayed alone);
- breakdown: one serial pass timing read / prepare / stage 1 / stage 2 / decode / encode;
- latency: ``Engine.extract`` on batches of B documents, p50/p95/p99 per B;
- peak RSS (and GPU memory): ``nere extract`` in a child process per bundle and corpus;
- ``--baseline torch``: the checkpoint in eager PyTorch, the way a user would write it.

Writes report.json (stable keys, see docs/benchmarks.md), report.md and PNG plots.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import statistics
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import click

from nere.bench_measure import (
    CorpusStats,
    end_to_end,
    engine_batch_runner,
    latency,
    profile_pass,
    rates,
    read_documents,
)
from nere.engine.errors import EngineError

REPORT_SCHEMA = "nere-bench/1"
TARGETS = {"int8_speedup_vs_torch": 3.0, "int8_f1_drop": 0.005, "end_to_end_over_model_only": 0.85,
           "rss_growth": 1.2}
F1_KEYS = ("f1", "re_f1", "engine_f1", "e2e_f1")


def _echo(msg: str) -> None:
    click.echo(msg, err=True)


def _int_list(value: str, what: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give comma-separated integers, e.g. 1,8,32", param_hint=what) from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"{value!r}: give positive integers", param_hint=what)
    return sorted(set(out))


# ------------------------------------------------------------------ machine and versions
def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu_model": cpu, "logical_cores": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version()}
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return info


def versions(with_torch: bool) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("nere", "onnxruntime", "onnxruntime-gpu", "numpy", "pyarrow", "tokenizers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    if with_torch:
        try:
            out["torch"] = metadata.version("torch")
        except metadata.PackageNotFoundError:
            out["torch"] = None
    return out


def load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ------------------------------------------------------------------ bundles and checkpoints
def checkpoint_of(manifest: dict[str, Any]) -> str | None:
    """The checkpoint a bundle was exported from: ``made_by.checkpoint`` if recorded, else
    the argument of the ``nere export`` command line; None when that folder is not here."""
    made = manifest.get("made_by") or {}
    found = made.get("checkpoint") if isinstance(made.get("checkpoint"), str) else None
    if found is None and isinstance(made.get("command"), str):
        try:
            words = shlex.split(made["command"])
        except ValueError:
            words = []
        if "export" in words:
            rest = words[words.index("export") + 1 :]
            skip = False
            for w in rest:  # the first word that is not an option or an option's value
                if skip:
                    skip = False
                elif w.startswith("--"):
                    skip = "=" not in w and w not in ("--overwrite", "--quiet")
                elif not w.startswith("-"):
                    found = w
                    break
    if found and (Path(found) / "config.json").is_file():
        return found
    return None


def verified_metrics(manifest: dict[str, Any]) -> dict[str, Any]:
    """The F1 figures ``nere export --verify`` recorded (test split preferred)."""
    metrics = manifest.get("metrics") or {}
    split = "test" if "test" in metrics else next(iter(metrics), None)
    m = metrics.get(split) or {} if split else {}
    keep = {k: m[k] for k in (*F1_KEYS, "torch_f1", "f1_diff", "re_torch_f1", "agreement", "passed", "dataset",
                              "limit", "sentences") if k in m}
    if keep:
        keep["split"] = split
    return keep


class Config:
    """One bundle at one batch-token budget: an Engine plus what is measured about it."""

    def __init__(self, name: str, bundle: Any, engine: Any, checkpoint: str | None) -> None:
        self.name, self.bundle, self.engine, self.checkpoint = name, bundle, engine, checkpoint
        self.e2e: list[float] = []
        self.model: list[float] = []
        self.profile = None
        self.latency: list[dict] = []
        self.memory: dict[str, Any] | None = None
        self.rss_scaling: list[dict] = []

    @property
    def precision(self) -> str:
        return str(self.bundle.manifest.get("precision"))

    def describe(self) -> dict[str, Any]:
        m = self.bundle.manifest
        return {"name": self.name, "bundle": str(self.bundle.path), "task": self.bundle.task, "model": m.get("model"),
                "precision": self.precision, "sha256": self.bundle.sha256, "provider": self.engine.provider,
                "provider_notes": self.bundle.notes, "batch_tokens": self.engine.batch_tokens,
                "checkpoint": self.checkpoint, "metrics": verified_metrics(m),
                "bundle_bytes": (m.get("made_by") or {}).get("bundle_bytes")}


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


# ------------------------------------------------------------------ the command
@click.command("bench")
@click.option("--model", "-m", "models", multiple=True, required=True, help="NER or joint bundle folder (repeatable).")
@click.option("--corpus", required=True, type=click.Path(dir_okay=False), help="Parquet corpus (id and text columns).")
@click.option("--id-col", default="id", show_default=True)
@click.option("--text-col", default="text", show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--batch-tokens", "batch_tokens", multiple=True, type=click.IntRange(1),
              help="Engine token budget per batch (repeatable; default: the engine's).")
@click.option("--batch-sizes", default="1,8,32,128", show_default=True, help="Documents per latency batch.")
@click.option("--threads", type=click.IntRange(1), default=None, help="onnxruntime and torch threads [default: all cores].")
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True)
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N documents of the corpus.")
@click.option("--baseline", type=click.Choice(["torch"]), default=None, help="Also run the PyTorch checkpoint eagerly.")
@click.option("--checkpoint", type=click.Path(file_okay=False), default=None,
              help="Checkpoint for the baseline [default: the one each bundle's manifest names].")
@click.option("--baseline-batch-docs", type=click.IntRange(1), default=16, show_default=True,
              help="Documents per baseline forward (all their sentences in one padded batch).")
@click.option("--latency-seconds", type=click.FloatRange(0), default=8.0, show_default=True,
              help="Time budget per model and batch size (at least 5 samples).")
@click.option("--latency/--no-latency", "do_latency", default=True, show_default=True)
@click.option("--rss/--no-rss", "do_rss", default=True, show_default=True,
              help="Peak RSS of `nere extract` (and the baseline) in a child process.")
@click.option("--rss-corpus", multiple=True, type=click.Path(dir_okay=False),
              help="Also measure `nere extract`'s peak RSS over this whole corpus (repeatable: memory vs size).")
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False), help="Report folder.")
def bench(models, corpus, id_col, text_col, device, batch_tokens, batch_sizes, threads, repeats, limit, baseline,
          checkpoint, baseline_batch_docs, latency_seconds, do_latency, do_rss, rss_corpus, out) -> None:
    """Measure throughput, latency and memory of bundles over a Parquet corpus."""
    sizes = _int_list(batch_sizes, "--batch-sizes")
    threads = threads or os.cpu_count() or 1
    out_dir = Path(out)
    if checkpoint is not None and not (Path(checkpoint) / "config.json").is_file():
        raise click.ClickException(f"--checkpoint {checkpoint}: not a checkpoint folder (no config.json)")
    for path in (corpus, *rss_corpus):
        if not Path(path).is_file():
            raise click.ClickException(f"corpus {path}: no such file")
    try:
        report = run_bench(list(models), corpus, id_col, text_col, device, list(batch_tokens) or [None], sizes,
                           threads, repeats, limit, baseline, checkpoint, baseline_batch_docs, latency_seconds,
                           do_latency, do_rss, list(rss_corpus), out_dir)
    except (EngineError, ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    from nere.bench_report import write_outputs

    files = write_outputs(report, out_dir)
    _echo("wrote " + ", ".join(str(out_dir / f) for f in files))
    for t in report["targets"]:
        _echo(f"target {t['name']} [{t['subject']}]: {t['value']} (threshold {t['threshold']}) "
              f"{'met' if t['passed'] else 'MISSED'}")


def run_bench(models: list[str], corpus: str, id_col: str, text_col: str, device: str, budgets: list[int | None],
              sizes: list[int], threads: int, repeats: int, limit: int | None, baseline: str | None,
              checkpoint: str | None, baseline_batch_docs: int, latency_seconds: float, do_latency: bool,
              do_rss: bool, rss_corpus: list[str], out_dir: Path) -> dict[str, Any]:
    """All measurements; returns the report dict (see docs/benchmarks.md)."""
    from nere.engine.api import Engine
    from nere.engine.bundle import load_bundle

    started = datetime.now(timezone.utc)
    load_start = load_avg()
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = out_dir / ".scratch"
    configs: list[Config] = []
    for path in models:
        bundle = load_bundle(path, "cuda" if device == "cuda" else "cpu", threads)
        if bundle.ner is None:
            raise EngineError(f"bundle {path} is RE-only: nere bench runs NER or joint bundles")
        ckpt = checkpoint or checkpoint_of(bundle.manifest)
        for bt in budgets:
            name = Path(path).name + (f"@{bt}" if len(budgets) > 1 else "")
            engine = Engine(bundle, device=device, threads=threads, batch_tokens=bt)
            configs.append(Config(name, bundle, engine, ckpt))
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise EngineError(f"two --model folders share a name ({', '.join(names)}): give each bundle its own folder name")

    # warm-up + serial profile (also records the model calls for the model-only replays)
    for c in configs:
        _echo(f"[profile] {c.name} ({c.precision}, {c.engine.provider}, batch_tokens {c.engine.batch_tokens})")
        end_to_end(c.engine, corpus, min(limit or 256, 256), scratch / "warmup", id_col, text_col)
        c.profile = profile_pass(c.engine, corpus, limit, id_col, text_col)
        c.profile.recorder.replay()  # warm-up of the replay path
    stats: CorpusStats = configs[0].profile.stats

    baselines = _baselines(configs, baseline, threads, baseline_batch_docs, device, corpus, id_col, text_col)
    # interleaved repeats: each round runs every model and baseline once
    for r in range(repeats):
        for c in configs:
            seconds, _ = end_to_end(c.engine, corpus, limit, scratch / "e2e", id_col, text_col)
            c.e2e.append(seconds)
            c.model.append(c.profile.recorder.replay())
            _echo(f"[{r + 1}/{repeats}] {c.name}: end to end {c.profile.stats.documents / seconds:,.1f} docs/s, "
                  f"model only {c.profile.stats.documents / c.model[-1]:,.1f} docs/s")
        for b in baselines:
            info = b["runner"].run(corpus, limit, scratch / "baseline.parquet", id_col, text_col)
            b["runs"].append(info)
            _echo(f"[{r + 1}/{repeats}] {b['name']}: {info['documents'] / info['seconds']:,.1f} docs/s")

    if do_latency:
        ids, texts = read_documents(corpus, max(sizes) * 6, id_col, text_col)
        for c in configs:
            for size in sizes:
                c.latency.append(latency(engine_batch_runner(c.engine, id_col, text_col), ids, texts, size,
                                         latency_seconds, 5, 1000))
                _echo(f"[latency] {c.name} batch {size}: p50 {c.latency[-1].get('p50_ms')} ms")
        for b in baselines:
            for size in sizes:
                b["latency"].append(latency(b["runner"].batch_runner(), ids, texts, size, latency_seconds, 5, 1000))
                _echo(f"[latency] {b['name']} batch {size}: p50 {b['latency'][-1].get('p50_ms')} ms")

    if do_rss or rss_corpus:
        from nere.bench_proc import baseline_peak, extract_peak

        seen: set[str] = set()
        for c in configs:
            bt = c.engine.batch_tokens
            if do_rss:
                c.memory = _strip(extract_peak(str(c.bundle.path), corpus, device, threads, limit, bt, id_col, text_col))
                _echo(f"[rss] {c.name}: peak {c.memory['peak_rss_mb']} MB")
            key = str(c.bundle.path)
            if key in seen:
                continue  # memory vs corpus size: once per bundle
            seen.add(key)
            for rc in rss_corpus:
                m = _strip(extract_peak(key, rc, device, threads, None, bt, id_col, text_col), keep_timeline=True)
                m["corpus"] = rc
                c.rss_scaling.append(m)
                _echo(f"[rss] {c.name} over {rc}: peak {m['peak_rss_mb']} MB, {m.get('documents')} docs")
        if do_rss:
            for b in baselines:
                b["memory"] = _strip(baseline_peak(b["checkpoint"], corpus, device, threads, limit, baseline_batch_docs,
                                                   id_col, text_col))
                _echo(f"[rss] {b['name']}: peak {b['memory']['peak_rss_mb']} MB")

    shutil.rmtree(scratch, ignore_errors=True)
    return build_report(configs, baselines, stats, corpus, limit, device, threads, repeats, sizes, budgets,
                        baseline_batch_docs, started, load_start)


def _strip(m: dict[str, Any], keep_timeline: bool = False) -> dict[str, Any]:
    """A child measurement for the report: the failure's output only when it failed."""
    out = {k: v for k, v in m.items() if k not in ("output_tail", "timeline")}
    if keep_timeline:
        out["timeline"] = m.get("timeline", [])
    if m.get("returncode"):
        out["error"] = m.get("output_tail", "")[-1000:]
    return out


def _baselines(configs: list[Config], baseline: str | None, threads: int, batch_docs: int, device: str, corpus: str,
               id_col: str, text_col: str) -> list[dict[str, Any]]:
    if baseline is None:
        return []
    missing = [c.name for c in configs if c.checkpoint is None]
    if missing:
        raise EngineError(f"--baseline torch: no checkpoint found for {', '.join(missing)} (the manifest names none "
                          "that exists here); pass --checkpoint DIR")
    from nere.bench_baseline import TorchBaseline, warm_up

    out = []
    ids, texts = read_documents(corpus, batch_docs, id_col, text_col)
    for ckpt in dict.fromkeys(c.checkpoint for c in configs):
        _echo(f"[baseline] loading {ckpt} (torch eager fp32)")
        runner = TorchBaseline(ckpt, threads, batch_docs, device)
        warm_up(runner, ids, texts)
        out.append({"name": f"torch-eager-fp32:{Path(ckpt).name}", "checkpoint": ckpt, "runner": runner, "runs": [],
                    "latency": [], "memory": None})
    return out


# ------------------------------------------------------------------ report
def _rates_of(docs: int, sentences: int, tokens: int, seconds: list[float]) -> dict[str, Any]:
    med = _median(seconds)
    out = rates(CorpusStats(documents=docs, sentences=sentences, tokens=tokens), med) if med else {}
    out["seconds_all"] = [round(s, 4) for s in seconds]
    return out


def build_report(configs: list[Config], baselines: list[dict], stats: CorpusStats, corpus: str, limit: int | None,
                 device: str, threads: int, repeats: int, sizes: list[int], budgets: list, batch_docs: int,
                 started: datetime, load_start: list | None) -> dict[str, Any]:
    models = []
    for c in configs:
        s = c.profile.stats
        e2e = _rates_of(s.documents, s.sentences, s.tokens, c.e2e)
        model = _rates_of(s.documents, s.sentences, s.tokens, c.model)
        ratio = (model["seconds"] / e2e["seconds"]) if e2e.get("seconds") and model.get("seconds") else None
        models.append({
            **c.describe(),
            "end_to_end": e2e,
            "model_only": model,
            "end_to_end_over_model_only": round(ratio, 4) if ratio is not None else None,
            "breakdown_s": c.profile.phases,
            "model_batches": c.profile.batches,
            "outputs": {"entities": s.entities, "relations": s.relations, "failed_documents": s.failed},
            "latency": c.latency,
            "memory": c.memory,
            "rss_scaling": c.rss_scaling,
        })
    base_out = []
    for b in baselines:
        runs = b["runs"]
        first = runs[0] if runs else {}
        base_out.append({
            "name": b["name"], "checkpoint": b["checkpoint"], "precision": "fp32", "mode": "torch eager, no_grad",
            "batch_docs": batch_docs, "threads": threads,
            "end_to_end": _rates_of(first.get("documents", 0), first.get("sentences", 0), first.get("tokens", 0),
                                    [r["seconds"] for r in runs]),
            "truncated_sentences": b["runner"].truncated,
            "outputs": {"entities": first.get("entities"), "relations": first.get("relations")},
            "latency": b["latency"],
            "memory": b["memory"],
        })
    report = {
        "schema": REPORT_SCHEMA,
        "created": started.isoformat(timespec="seconds"),
        "command": "nere " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None,
        "machine": {**machine_info(), "load_avg_start": load_start, "load_avg_end": load_avg()},
        "versions": versions(bool(baselines)),
        "settings": {"device": device, "threads": threads, "repeats": repeats, "limit": limit,
                     "batch_sizes": sizes, "batch_tokens": budgets, "baseline_batch_docs": batch_docs,
                     "statistic": "median of repeats; warm-up excluded"},
        "corpus": {"path": str(corpus), "documents": stats.documents, "sentences": stats.sentences,
                   "model_rows": stats.rows, "tokens": stats.tokens, "characters": stats.characters},
        "models": models,
        "baselines": base_out,
    }
    report["targets"] = evaluate_targets(report)
    return report


def _target(name: str, subject: str, value: float | None, threshold: float, higher_is_better: bool,
            detail: str) -> dict[str, Any]:
    passed = None if value is None else (value >= threshold if higher_is_better else value <= threshold)
    return {"name": name, "subject": subject, "value": None if value is None else round(value, 4),
            "threshold": threshold, "passed": passed, "detail": detail}


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The speed/accuracy/memory targets of docs/benchmarks.md, computed from this report."""
    out = []
    base_by_ckpt = {b["checkpoint"]: b for b in report["baselines"]}
    models = report["models"]
    for m in models:
        ratio = m["end_to_end_over_model_only"]
        out.append(_target("end_to_end_over_model_only", m["name"], ratio, TARGETS["end_to_end_over_model_only"], True,
                           "end-to-end docs/s / model-only docs/s (same documents)"))
        if m["precision"] != "int8":
            continue
        b = base_by_ckpt.get(m["checkpoint"])
        if b and b["end_to_end"].get("documents_per_s"):
            speed = m["end_to_end"]["documents_per_s"] / b["end_to_end"]["documents_per_s"]
            out.append(_target("int8_speedup_vs_torch", m["name"], speed, TARGETS["int8_speedup_vs_torch"], True,
                               f"end-to-end docs/s vs {b['name']}"))
        ref = next((o for o in models if o["precision"] == "fp32" and o["checkpoint"] == m["checkpoint"]
                    and m["checkpoint"] is not None), None)
        for key in F1_KEYS:
            mine = m["metrics"].get(key)
            if mine is None:
                continue
            if ref is not None and ref["metrics"].get(key) is not None:
                theirs, source = ref["metrics"][key], f"fp32 bundle {ref['name']}"
            else:
                torch_key = "torch_f1" if key == "f1" else ("re_torch_f1" if key == "re_f1" else None)
                theirs, source = m["metrics"].get(torch_key) if torch_key else None, "PyTorch fp32 (int8 manifest)"
            if theirs is None:
                continue
            out.append(_target("int8_f1_drop", f"{m['name']} {key}", abs(theirs - mine), TARGETS["int8_f1_drop"], False,
                               f"|F1 {source} {theirs:.4f} - int8 {mine:.4f}| (manifests' verified metrics)"))
    for m in models:
        runs = [r for r in m["rss_scaling"] if r.get("peak_rss_mb") and not r.get("error")]
        if len(runs) >= 2:
            runs = sorted(runs, key=lambda r: r.get("documents") or 0)
            growth = runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"]
            out.append(_target("rss_growth", m["name"], growth, TARGETS["rss_growth"], False,
                               f"peak RSS {runs[-1].get('documents')} docs / {runs[0].get('documents')} docs "
                               "(nere extract child processes)"))
    return out


if __name__ == "__main__":
    bench()
