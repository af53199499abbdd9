"""Scaling figures of ``nere extract --ray`` on one machine: a local Ray cluster with 1 and 2
actors against the single-process engine, on the same corpus.

    python scripts/bench_cluster.py --bundle artifacts/zh-msra-ner-bilstm-crf-int8 \
        --source artifacts/sample_zh.parquet --docs 10000 --work /tmp/nere-cluster-bench

Each configuration runs in a fresh Python process. Times cover loading the bundle(s) and
running (for Ray: from the first block handed out to the summary, actors' start-up
included; starting Ray itself is reported apart). Writes docs/benchmarks/cluster-scaling.json
and the table between the markers in docs/scale.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from make_corpus import parquet_texts, repeated_documents, write_corpus  # noqa: E402

START, END = "<!-- cluster-scaling:start -->", "<!-- cluster-scaling:end -->"

SINGLE = """
import json, resource, sys, time
from nere.engine.api import Engine
corpus, bundle, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t = time.perf_counter()
engine = Engine.load(bundle, threads=threads)
s = engine.run([corpus], out, overwrite=True, progress=False)
print(json.dumps({"seconds": time.perf_counter() - t, "run_seconds": s["seconds"], "documents": s["documents_read"],
                  "entities": s["entities"], "cpu_seconds": time.process_time(),
                  "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

RAY = """
import json, resource, sys, time
import ray
from nere.engine.cluster.ray_run import run_on_ray
corpus, bundle, out, cpus, block_docs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
t = time.perf_counter()
ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
started = time.perf_counter() - t
results = []
for actors in (1, 2):
    threads = cpus // actors
    t, cpu = time.perf_counter(), time.process_time()
    s = run_on_ray([corpus], f"{out}-{actors}", bundle, actors=actors, threads=threads, block_docs=block_docs,
                   overwrite=True, progress=False)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    records = [json.loads(p.read_text()) for p in sorted((__import__("pathlib").Path(f"{out}-{actors}") / "blocks").glob("*.json"))]
    rss, cpu_of = {}, {}
    for r in records:
        pid = r["engine"]["pid"]
        rss[pid] = max(rss.get(pid, 0), r["engine"]["max_rss_mib"])
        cpu_of[pid] = max(cpu_of.get(pid, 0), r["engine"]["cpu_seconds"])
    results.append({"actors": actors, "threads_per_actor": threads, "seconds": seconds, "documents": s["documents_read"],
                    "entities": s["entities"], "blocks": s["parts"], "driver_cpu_seconds": cpu,
                    "actor_max_rss_mib": sorted(rss.values()), "actor_cpu_seconds": sorted(cpu_of.values())})
print(json.dumps({"ray_init_seconds": started, "runs": results,
                  "driver_max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _python(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace) -> dict:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"corpus-{args.docs}.parquet"
    made = write_corpus(repeated_documents(parquet_texts(args.source)), args.docs, corpus, row_group=args.row_group)
    rounds = []
    for r in range(args.rounds):
        load = os.getloadavg()[0]
        single = _python(SINGLE, str(corpus), args.bundle, str(work / "single"), str(args.cpus))
        ray_runs = _python(RAY, str(corpus), args.bundle, str(work / "ray"), str(args.cpus), str(args.block_docs))
        rounds.append({"round": r, "load_average_before": load, "single": single, "ray": ray_runs})
        print(json.dumps(rounds[-1]), file=sys.stderr)
    return {
        "what": "nere extract on a local Ray cluster (1 and 2 actors) against the single-process engine",
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "bundle": args.bundle, "corpus": {**made, "path": corpus.name, "row_group": args.row_group},
        "block_docs": args.block_docs, "cpus": args.cpus,
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "note": "2-core machine shared with other jobs; see load_average_before"},
        "rounds": rounds,
    }


def table(result: dict) -> str:
    """The markdown table of the best round of each configuration (least wall time). CPU
    seconds (process CPU time, bundle loading included) hold up better than wall time on a
    shared machine."""
    rounds = result["rounds"]
    single = min((r["single"] for r in rounds), key=lambda s: s["seconds"])
    ray1 = min((r["ray"]["runs"][0] for r in rounds), key=lambda s: s["seconds"])
    ray2 = min((r["ray"]["runs"][1] for r in rounds), key=lambda s: s["seconds"])
    docs = single["documents"]
    lines = [
        "| configuration | seconds | docs/s | speed vs single process | CPU s (actors + driver) | CPU vs single "
        "| peak RSS, MiB |",
        "|---|---:|---:|---:|---:|---:|---|",
        f"| single process, {result['cpus']} threads | {single['seconds']:.1f} | {docs / single['seconds']:.0f} | 1.00 "
        f"| {single['cpu_seconds']:.1f} | 1.00 | {single['max_rss_mib']:.0f} |",
    ]
    for run in (ray1, ray2):
        rss = ", ".join(f"{m:.0f}" for m in run["actor_max_rss_mib"])
        cpu = sum(run["actor_cpu_seconds"]) + run["driver_cpu_seconds"]
        lines.append(f"| Ray, {run['actors']} actor{'s' * (run['actors'] > 1)} x {run['threads_per_actor']} threads "
                     f"| {run['seconds']:.1f} | {docs / run['seconds']:.0f} | {single['seconds'] / run['seconds']:.2f} "
                     f"| {sum(run['actor_cpu_seconds']):.1f} + {run['driver_cpu_seconds']:.1f} "
                     f"| {cpu / single['cpu_seconds']:.2f} | per actor: {rss} |")
    inits = [r["ray"]["ray_init_seconds"] for r in rounds]
    loads = ", ".join(f"{r['load_average_before']:.1f}" for r in rounds)
    lines += ["", f"2 actors against 1: {ray1['seconds'] / ray2['seconds']:.2f}x. Starting the local Ray cluster "
              f"(not in the times above): {min(inits):.0f}-{max(inits):.0f} s; driver peak RSS "
              f"{max(r['ray']['driver_max_rss_mib'] for r in rounds):.0f} MiB. {len(rounds)} round(s), best of each "
              f"shown; load average before each round: {loads}."]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default="artifacts/zh-msra-ner-bilstm-crf-int8")
    p.add_argument("--source", default="artifacts/sample_zh.parquet", help="Parquet file whose texts are repeated.")
    p.add_argument("--docs", type=int, default=10_000)
    p.add_argument("--row-group", type=int, default=500, help="Rows per row group of the corpus (blocks are made of them).")
    p.add_argument("--block-docs", type=int, default=2_500)
    p.add_argument("--cpus", type=int, default=2, help="Threads of the single process; CPUs of the Ray cluster.")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--work", default="/tmp/nere-cluster-bench", help="Corpus and outputs (outside the repository).")
    p.add_argument("--json", default=str(ROOT / "docs/benchmarks/cluster-scaling.json"))
    p.add_argument("--doc", default=str(ROOT / "docs/scale.md"), help="Markdown file whose marked table is rewritten.")
    p.add_argument("--table-only", action="store_true", help="Rewrite the table from --json without measuring.")
    args = p.parse_args()
    if args.table_only:
        result = json.loads(Path(args.json).read_text())
    else:
        result = measure(args)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    md = table(result)
    doc = Path(args.doc)
    if doc.is_file() and START in (text := doc.read_text()):
        head, rest = text.split(START, 1)
        doc.write_text(f"{head}{START}\n{md}\n{END}{rest.split(END, 1)[1]}")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
