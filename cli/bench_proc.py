"""Peak memory of one run, measured in a child process of its own.

A process's peak RSS only grows, so a measurement shared with the benchmark's own
process (several models loaded, earlier passes) says nothing about one run. Here each
run is a fresh child: ``nere extract`` for a bundle, or this module's worker for the
PyTorch baseline. The peak is the child's ``ru_maxrss`` from ``os.wait4`` (exact, kernel
accounted); a psutil poll adds the RSS over time, to show whether memory keeps growing
with the corpus; on CUDA, ``nvidia-smi`` is polled for the child's GPU memory.

    python -m nere.bench_proc --checkpoint CKPT --corpus C.parquet [--limit N] ...
runs the baseline and prints one JSON line (documents, seconds, ...).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import psutil

POLL_S = 0.2
GPU_POLL_S = 1.0


def _maxrss_mb(ru_maxrss: int) -> float:
    """ru_maxrss is KiB on Linux, bytes on macOS."""
    return ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def _gpu_used_mb(pid: int) -> float | None:
    """GPU memory nvidia-smi reports for ``pid`` (None when unavailable)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid):
            try:
                return float(parts[1])
            except ValueError:
                return None
    return None


def measure(cmd: Sequence[str], gpu: bool = False, timeout: float | None = None) -> dict[str, Any]:
    """Run ``cmd``; returns returncode, seconds, peak_rss_mb (wait4), the polled RSS
    timeline [(seconds, MB)], gpu_peak_mb (nvidia-smi) and the output's last lines."""
    gpu = gpu and shutil.which("nvidia-smi") is not None
    with tempfile.TemporaryFile("w+") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, text=True)
        ps = psutil.Process(proc.pid)
        timeline: list[tuple[float, float]] = []
        gpu_peak: float | None = None
        next_gpu = 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            now = time.perf_counter() - started
            if pid:
                break
            try:
                timeline.append((round(now, 2), round(ps.memory_info().rss / 2**20, 1)))
            except psutil.Error:
                pass
            if gpu and now >= next_gpu:
                used = _gpu_used_mb(proc.pid)
                if used is not None:
                    gpu_peak = max(gpu_peak or 0.0, used)
                next_gpu = now + GPU_POLL_S
            if timeout is not None and now > timeout:
                proc.kill()
            time.sleep(POLL_S)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        tail = out.read()[-4000:]
    return {"returncode": proc.returncode, "seconds": round(now, 3), "peak_rss_mb": round(_maxrss_mb(usage.ru_maxrss), 1),
            "timeline": _thin(timeline), "gpu_peak_mb": gpu_peak, "output_tail": tail}


def _thin(points: list, keep: int = 400) -> list:
    """At most ``keep`` points (every k-th, the last always kept)."""
    if len(points) <= keep:
        return points
    step = -(-len(points) // keep)
    return points[::step] + ([points[-1]] if (len(points) - 1) % step else [])


def extract_cmd(bundle: str, corpus: str, out_dir: str, device: str, threads: int, limit: int | None,
                batch_tokens: int | None, id_col: str, text_col: str, re_bundle: str | None = None) -> list[str]:
    """``nere extract`` as a child process (the installed CLI, run by this interpreter)."""
    cmd = [sys.executable, "-m", "nere.cli", "extract", str(corpus), "--model", str(bundle), "--out", str(out_dir),
           "--device", device, "--threads", str(threads), "--id-col", id_col, "--text-col", text_col,
           "--no-progress", "--overwrite"]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    if batch_tokens is not None:
        cmd += ["--batch-tokens", str(batch_tokens)]
    if re_bundle is not None:
        cmd += ["--re-model", str(re_bundle)]
    return cmd


def extract_peak(bundle: str, corpus: str, device: str, threads: int, limit: int | None, batch_tokens: int | None,
                 id_col: str = "id", text_col: str = "text", re_bundle: str | None = None) -> dict[str, Any]:
    """Peak RSS (and GPU memory) of ``nere extract`` over the corpus, plus its summary's rates."""
    with tempfile.TemporaryDirectory(prefix="nere-bench-") as tmp:
        out_dir = Path(tmp) / "out"
        r = measure(extract_cmd(bundle, corpus, str(out_dir), device, threads, limit, batch_tokens, id_col, text_col,
                                re_bundle), gpu=device == "cuda")
        summary_file = out_dir / "summary.json"
        if r["returncode"] == 0 and summary_file.is_file():
            s = json.loads(summary_file.read_text())
            r.update(documents=s["documents_read"], documents_per_s=s["documents_per_second"],
                     tokens_per_s=s["tokens_per_second"])
    return r


def baseline_peak(checkpoint: str, corpus: str, device: str, threads: int, limit: int | None, batch_docs: int,
                  id_col: str = "id", text_col: str = "text", re_checkpoint: str | None = None) -> dict[str, Any]:
    """Peak RSS of the PyTorch baseline over the corpus, in a child process."""
    cmd = [sys.executable, "-m", "nere.bench_proc", "--checkpoint", str(checkpoint), "--corpus", str(corpus),
           "--device", device, "--threads", str(threads), "--batch-docs", str(batch_docs), "--id-col", id_col,
           "--text-col", text_col]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    if re_checkpoint is not None:
        cmd += ["--re-checkpoint", str(re_checkpoint)]
    r = measure(cmd, gpu=device == "cuda")
    if r["returncode"] == 0:
        try:
            info = json.loads(r["output_tail"].strip().splitlines()[-1])
            r.update(documents=info["documents"], documents_per_s=round(info["documents"] / info["seconds"], 2),
                     gpu_torch_peak_mb=info.get("gpu_peak_mb"))
        except (ValueError, KeyError, IndexError, ZeroDivisionError):
            pass
    return r


def _worker(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m nere.bench_proc", description="Run the PyTorch baseline once.")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--re-checkpoint", default=None)
    p.add_argument("--corpus", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--batch-docs", type=int, default=16)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--id-col", default="id")
    p.add_argument("--text-col", default="text")
    a = p.parse_args(argv)
    from nere.bench_baseline import TorchBaseline

    base = TorchBaseline(a.checkpoint, a.threads, a.batch_docs, a.device, a.re_checkpoint)
    with tempfile.TemporaryDirectory(prefix="nere-bench-") as tmp:
        info = base.run(a.corpus, a.limit, Path(tmp) / "entities.parquet", a.id_col, a.text_col)
    info["gpu_peak_mb"] = base.gpu_peak_mb()
    print(json.dumps(info))


if __name__ == "__main__":
    _worker()
