"""``nere bench`` outputs: report.json, report.md and PNG plots (matplotlib, Agg)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_outputs(report: dict[str, Any], out_dir: Path) -> list[str]:
    """Write every output file into ``out_dir``; returns their names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "report.md").write_text(markdown(report))
    files = ["report.json", "report.md"]
    files += plots(report, out_dir)
    return files


def _f(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(r: dict[str, Any]) -> str:
    mach, s, c = r["machine"], r["settings"], r["corpus"]
    lines = [
        "# nere bench report",
        "",
        f"- created: {r['created']}" + (f"; command: `{r['command']}`" if r.get("command") else ""),
        f"- machine: {mach.get('cpu_model')}, {mach.get('logical_cores')} logical cores"
        f" ({mach.get('physical_cores')} physical), {mach.get('memory_gb')} GB; load average at start "
        f"{mach.get('load_avg_start')}, at end {mach.get('load_avg_end')}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()),
        f"- settings: device {s['device']}, {s['threads']} threads, {s['repeats']} repeats ({s['statistic']}), "
        f"limit {s['limit']}, baseline batch {s['baseline_batch_docs']} documents",
        f"- corpus: {c['path']}: {c['documents']:,} documents, {c['sentences']:,} sentences, "
        f"{c['tokens']:,} tokens, {c['characters']:,} characters",
        "",
        "## Throughput (end to end = read -> tables written; model only = ONNX stages on pre-batched inputs)",
        "",
        _row(["model", "precision", "provider", "batch tokens", "docs/s", "sentences/s", "tokens/s",
              "model-only docs/s", "e2e / model-only", "= CPU ratio x busy ratio", "CPU us/doc: model / engine",
              "model idle ms: before first / after last call", "model calls in flight (stage-1 streams)",
              "peak RSS MB", "F1 (verified)"]),
        _row(["---"] * 15),
    ]
    for m in r["models"]:
        e, mo, mem = m["end_to_end"], m["model_only"], m.get("memory") or {}
        f1 = m["metrics"].get("f1")
        cpu = m.get("end_to_end_cpu") or {}
        split = (f"{_f(cpu['model_us_per_document'])} / {_f(cpu['engine_us_per_document'])}"
                 if "engine_us_per_document" in cpu else "-")
        idle = m.get("end_to_end_model_idle_ms") or {}
        ends = (f"{_f(idle['before_first_model_call'])} / {_f(idle['after_last_model_call'])}"
                if "share_of_wall" in idle else "-")
        parts = m.get("end_to_end_over_model_only_split") or {}
        why = (f"{_f(parts['cpu_ratio'], 3)} x {_f(parts['busy_ratio'], 3)}" if "cpu_ratio" in parts else "-")
        fly = m.get("end_to_end_model_calls_in_flight") or {}
        flight = f"{_f(fly['mean_calls'], 2)} ({fly['stage1_streams']})" if "mean_calls" in fly else "-"
        lines.append(_row([m["name"], m["precision"], m["provider"].replace("ExecutionProvider", ""), m["batch_tokens"],
                           _f(e.get("documents_per_s")), _f(e.get("sentences_per_s")), _f(e.get("tokens_per_s"), 0),
                           _f(mo.get("documents_per_s")), _f(m["end_to_end_over_model_only"], 3), why, split, ends,
                           flight, _f(mem.get("peak_rss_mb")), _f(f1, 4)]))
    for b in r["baselines"]:
        e, mem = b["end_to_end"], b.get("memory") or {}
        how = (f"HF pipeline (NER only), batch {b['batch_size']} docs" if b.get("kind") == "hf-pipeline"
               else f"torch eager, batch {b['batch_docs']} docs")
        lines.append(_row([b["name"], "fp32", how, "-",
                           _f(e.get("documents_per_s")), _f(e.get("sentences_per_s")), _f(e.get("tokens_per_s"), 0),
                           "-", "-", "-", "-", "-", "-", _f(mem.get("peak_rss_mb")), "-"]))
    versus = [(b["name"], v) for b in r["baselines"] for v in b.get("versus", [])]
    if versus:
        lines += ["", "## Against the baselines (docs/s ratio: median of per-round ratios; peak RSS: child processes)",
                  "", _row(["model", "baseline", "docs/s ratio", "per round", "peak RSS ratio"]), _row(["---"] * 5)]
        for name, v in versus:
            lines.append(_row([v["model"], name, _f(v["documents_per_s_ratio"], 2),
                               ", ".join(f"{x:.2f}" for x in v["documents_per_s_ratios"]), _f(v["peak_rss_ratio"], 3)]))
    if any(m["latency"] for m in r["models"]) or any(b["latency"] for b in r["baselines"]):
        lines += ["", "## Latency per batch (ms; batch = B documents through `Engine.extract`)", "",
                  _row(["model", "batch", "samples", "p50", "p95", "p99", "model-stage p50"]), _row(["---"] * 7)]
        for m in [*r["models"], *r["baselines"]]:
            for lat in m["latency"]:
                lines.append(_row([m["name"], lat["batch_size"], lat["samples"], _f(lat.get("p50_ms")),
                                   _f(lat.get("p95_ms")), _f(lat.get("p99_ms")),
                                   _f((lat.get("model") or {}).get("p50_ms"))]))
    lines += ["", "## Where the time goes (one serial pass, seconds)", "",
              _row(["model", "read", "prepare", "stage 1", "stage 2", "decode/assemble", "parquet encode", "total"]),
              _row(["---"] * 8)]
    for m in r["models"]:
        p = m["breakdown_s"]
        lines.append(_row([m["name"], *(_f(p.get(k), 2) for k in ("read", "prepare", "stage1", "stage2",
                                                                     "decode_assemble", "parquet_encode", "total"))]))
    computed = [m for m in r["models"] if (m.get("compute") or {}).get("stage1_weight_flops_per_token")]
    if computed:
        y = computed[0]["compute"]["yardstick"]
        lines += ["", f"## Compute (stage-1 weight FLOPs per content token vs one {y['matmul'].split(' ', 1)[1]} "
                      f"MatMul on {y['provider']}, {y['threads']} threads)", "",
                  _row(["model", "MFLOP/token", "yardstick GFLOP/s", "tokens/s it allows", "e2e share", "model-only share"]),
                  _row(["---"] * 6)]
        for m in computed:
            c = m["compute"]
            yard = f"{_f(c['yardstick']['gflops'])} ({c['yardstick']['matmul'].split()[0]})"
            lines.append(_row([m["name"], _f(c["stage1_weight_flops_per_token"] / 1e6, 2), yard,
                               _f(c["tokens_per_s_at_matmul_rate"], 0), _f(c["end_to_end_fraction"], 3),
                               _f(c["model_only_fraction"], 3)]))
    scaling = [(m["name"], x) for m in r["models"] for x in m["rss_scaling"]]
    if scaling:
        lines += ["", "## Peak RSS vs corpus size (`nere extract` child process)", "",
                  _row(["model", "corpus", "documents", "seconds", "docs/s", "peak RSS MB"]), _row(["---"] * 6)]
        for name, x in scaling:
            lines.append(_row([name, x["corpus"], _f(x.get("documents")), _f(x.get("seconds")),
                               _f(x.get("documents_per_s")), _f(x.get("peak_rss_mb"))]))
    if r["targets"]:
        lines += ["", "## Targets", "", _row(["target", "subject", "value", "threshold", "result", "how"]),
                  _row(["---"] * 6)]
        for t in r["targets"]:
            result = "n/a" if t["passed"] is None else ("met" if t["passed"] else "**missed**")
            lines.append(_row([t["name"], t["subject"], _f(t["value"], 3), t["threshold"], result, t["detail"]]))
    return "\n".join(lines) + "\n"


def tick_label(name: str, precision: str, width: int = 28) -> str:
    """A bar's label on lines of at most ``width`` characters: a pairing (``ner+re``) or a
    baseline (``torch-eager-fp32:ckpt``) breaks at its joints, long names at hyphens."""
    import textwrap

    parts = name.replace(":", ":\n").replace("+", "\n+").split("\n")
    lines = [ln for part in parts for ln in textwrap.wrap(part, width, break_on_hyphens=True) or [part]]
    return "\n".join(lines + [f"({precision})"])


def plots(r: dict[str, Any], out_dir: Path) -> list[str]:
    """throughput.png, latency.png (when measured) and rss.png (when scaling was measured)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401 - used as matplotlib.ticker

    files = []
    rows = [(m["name"], m["precision"], m["end_to_end"].get("documents_per_s"), m["model_only"].get("documents_per_s"))
            for m in r["models"]]
    rows += [(b["name"], "fp32 HF pipeline" if b.get("kind") == "hf-pipeline" else "fp32 torch",
              b["end_to_end"].get("documents_per_s"), None) for b in r["baselines"]]
    labels = [tick_label(n, p) for n, p, *_ in rows]
    height = 4.5 + 0.13 * max(label.count("\n") for label in labels)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(rows) + 2), height))
    xs = range(len(rows))
    w = 0.38
    e2e = [x[2] or 0 for x in rows]
    mo = [x[3] or 0 for x in rows]
    b1 = ax.bar([x - w / 2 for x in xs], e2e, w, label="end to end", color="#1f77b4")
    b2 = ax.bar([x + w / 2 for x in xs], mo, w, label="model only", color="#ff7f0e")
    for bars in (b1, b2):
        ax.bar_label(bars, labels=[(f"{v:,.1f}" if v < 100 else f"{v:,.0f}") if v else "" for v in bars.datavalues],
                     fontsize=8, padding=2)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("documents / second")
    ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    load = r["machine"].get("load_avg_start")
    ax.set_title(f"Throughput, median of {r['settings']['repeats']} ({r['settings']['device']}, "
                 f"{r['settings']['threads']} threads, {r['corpus']['documents']:,} docs"
                 + (f", load avg {load[0]:.1f}" if load else "") + ")", fontsize=10)
    ax.legend()
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(out_dir / "throughput.png", dpi=110)
    plt.close(fig)
    files.append("throughput.png")

    series = [(m["name"], m["latency"]) for m in [*r["models"], *r["baselines"]] if m["latency"]]
    if series:
        fig, axes = plt.subplots(1, 3, figsize=(14, 4.5), sharey=True)
        for ax, key, title in zip(axes, ("p50_ms", "p95_ms", "p99_ms"), ("p50", "p95", "p99")):
            for name, lat in series:
                pts = [(x["batch_size"], x[key]) for x in lat if x.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=name)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(r["settings"]["batch_sizes"])
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xlabel("batch size (documents)")
            ax.set_title(f"latency {title}")
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel("ms per batch")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "latency.png", dpi=110)
        plt.close(fig)
        files.append("latency.png")

    scaling = [(m["name"], x) for m in r["models"] for x in m["rss_scaling"] if x.get("timeline")]
    if scaling:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for name, x in scaling:
            t, mb = zip(*x["timeline"])
            ax.plot(t, mb, label=f"{name}: {x.get('documents') or '?'} docs (peak {x.get('peak_rss_mb')} MB)")
        ax.set_xlabel("seconds")
        ax.set_ylabel("RSS (MB)")
        ax.set_title("nere extract: resident memory over the run")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "rss.png", dpi=110)
        plt.close(fig)
        files.append("rss.png")
    return files
