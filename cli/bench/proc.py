"""Peak memory of one run, measured in a child process of its own.

A process's peak RSS only grows, so a measurement shared with the benchmark's own
process (several models loaded, earlier passes) says nothing about one run. Here each
run is a fresh child: ``nere extract`` for a bundle, or a baseline (eager PyTorch, the
Hugging Face pipeline), all started through this module's wrapper, which writes the
child's own ``VmHWM`` (peak resident set of its address space since ``exec``) to a file
when it exits.

Why not ``ru_maxrss`` (``os.wait4``, ``getrusage(RUSAGE_CHILDREN)``)?
On Linux a child's ``ru_maxrss`` starts at the *parent's* high-water mark: the kernel
folds the pre-``exec`` address space (the parent's, under vfork) into it, so a
``python -c pass`` child of a large parent reports about the parent's size.

A psutil poll adds the RSS over time (does memory keep growing with the corpus?); on
CUDA, ``nvidia-smi`` is polled for the child's GPU memory.

    python -m nere.bench.proc extract CORPUS --model BUNDLE --out DIR ...   (nere extract)
    python -m nere.bench.proc baseline --checkpoint CKPT --corpus C.parquet ...
    python -m nere.bench.proc hf-baseline --encoder DIR --tags O,B-X,I-X --corpus C.parquet ...
"""
from __future__ import annotations

import argparse
import atexit
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
HWM_ENV = "NERE_BENCH_HWM_FILE"


def vm_hwm_mb(pid: int | str = "self") -> float | None:
    """Peak resident set (VmHWM) of a process's address space, from /proc (Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _write_hwm_at_exit() -> None:
    """In the child: record VmHWM at exit into the file the parent named (if any)."""
    path = os.environ.get(HWM_ENV)
    if path:
        atexit.register(lambda: Path(path).write_text(str(vm_hwm_mb() or "")))


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
    """Run ``cmd``; returns returncode, seconds, peak_rss_mb, how the peak was read
    (``peak_source``: the child's VmHWM at exit when it writes one, else the polled
    maximum), the polled RSS timeline [(seconds, MB)], gpu_peak_mb and the output's tail."""
    gpu = gpu and shutil.which("nvidia-smi") is not None
    with tempfile.TemporaryDirectory(prefix="nere-bench-") as tmp:
        hwm_file = Path(tmp) / "vmhwm"
        out_file = Path(tmp) / "output"
        with open(out_file, "w+") as out:
            started = time.perf_counter()
            proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, text=True,
                                    env={**os.environ, HWM_ENV: str(hwm_file)})
            ps = psutil.Process(proc.pid)
            timeline: list[tuple[float, float]] = []
            polled_hwm = 0.0
            gpu_peak: float | None = None
            next_gpu = 0.0
            while True:
                now = time.perf_counter() - started
                if proc.poll() is not None:
                    break
                try:
                    timeline.append((round(now, 2), round(ps.memory_info().rss / 2**20, 1)))
                    polled_hwm = max(polled_hwm, vm_hwm_mb(proc.pid) or 0.0, timeline[-1][1])
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
            out.seek(0)
            tail = out.read()[-4000:]
        try:
            at_exit = float(hwm_file.read_text())
        except (OSError, ValueError):
            at_exit = None
    peak, source = (at_exit, "VmHWM at exit") if at_exit else (polled_hwm or None, "polled")
    return {"returncode": proc.returncode, "seconds": round(now, 3), "peak_rss_mb": peak and round(peak, 1),
            "peak_source": source, "timeline": _thin(timeline), "gpu_peak_mb": gpu_peak, "output_tail": tail}


def _thin(points: list, keep: int = 400) -> list:
    """At most ``keep`` points (every k-th, the last always kept)."""
    if len(points) <= keep:
        return points
    step = -(-len(points) // keep)
    return points[::step] + ([points[-1]] if (len(points) - 1) % step else [])


def extract_cmd(bundle: str, corpus: str, out_dir: str, device: str, threads: int, limit: int | None,
                batch_tokens: int | None, id_col: str, text_col: str, re_bundle: str | None = None,
                streams: int = 1) -> list[str]:
    """``nere extract`` as a child process (through this module's wrapper, which reports its peak)."""
    cmd = [sys.executable, "-m", "nere.bench.proc", "extract", str(corpus), "--model", str(bundle), "--out", str(out_dir),
           "--device", device, "--threads", str(threads), "--id-col", id_col, "--text-col", text_col,
           "--no-progress", "--overwrite", "--streams", str(streams)]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    if batch_tokens is not None:
        cmd += ["--batch-tokens", str(batch_tokens)]
    if re_bundle is not None:
        cmd += ["--re-model", str(re_bundle)]
    return cmd


def extract_peak(bundle: str, corpus: str, device: str, threads: int, limit: int | None, batch_tokens: int | None,
                 id_col: str = "id", text_col: str = "text", re_bundle: str | None = None,
                 streams: int = 1) -> dict[str, Any]:
    """Peak RSS (and GPU memory) of ``nere extract`` over the corpus, plus its summary's rates."""
    with tempfile.TemporaryDirectory(prefix="nere-bench-") as tmp:
        out_dir = Path(tmp) / "out"
        r = measure(extract_cmd(bundle, corpus, str(out_dir), device, threads, limit, batch_tokens, id_col, text_col,
                                re_bundle, streams), gpu=device == "cuda")
        summary_file = out_dir / "summary.json"
        if r["returncode"] == 0 and summary_file.is_file():
            s = json.loads(summary_file.read_text())
            r.update(documents=s["documents_read"], documents_per_s=s["documents_per_second"],
                     tokens_per_s=s["tokens_per_second"])
    return r


def baseline_peak(checkpoint: str, corpus: str, device: str, threads: int, limit: int | None, batch_docs: int,
                  id_col: str = "id", text_col: str = "text", re_checkpoint: str | None = None) -> dict[str, Any]:
    """Peak RSS of the PyTorch baseline over the corpus, in a child process."""
    cmd = [sys.executable, "-m", "nere.bench.proc", "baseline", "--checkpoint", str(checkpoint), "--corpus", str(corpus),
           "--device", device, "--threads", str(threads), "--batch-docs", str(batch_docs), "--id-col", id_col,
           "--text-col", text_col]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    if re_checkpoint is not None:
        cmd += ["--re-checkpoint", str(re_checkpoint)]
    return _child_rates(measure(cmd, gpu=device == "cuda"))


def _child_rates(r: dict[str, Any]) -> dict[str, Any]:
    """A baseline child's last output line (its JSON summary) folded into ``r``."""
    if r["returncode"] == 0:
        try:
            info = json.loads(r["output_tail"].strip().splitlines()[-1])
            r.update(documents=info["documents"], documents_per_s=round(info["documents"] / info["seconds"], 2),
                     gpu_torch_peak_mb=info.get("gpu_peak_mb"))
        except (ValueError, KeyError, IndexError, ZeroDivisionError):
            pass
    return r


def hf_baseline_peak(encoder: str, tags: Sequence[str], corpus: str, device: str, threads: int, limit: int | None,
                     batch_size: int, text_col: str = "text") -> dict[str, Any]:
    """Peak RSS of the Hugging Face pipeline baseline over the corpus, in a child process."""
    cmd = [sys.executable, "-m", "nere.bench.proc", "hf-baseline", "--encoder", str(encoder), "--tags",
           ",".join(tags), "--corpus", str(corpus), "--device", device, "--threads", str(threads),
           "--batch-size", str(batch_size), "--text-col", text_col]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    return _child_rates(measure(cmd, gpu=device == "cuda"))


def _hf_baseline(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m nere.bench.proc hf-baseline",
                                description="Run the Hugging Face pipeline baseline once.")
    p.add_argument("--encoder", required=True)
    p.add_argument("--tags", required=True, help="Comma-separated tag set of the head.")
    p.add_argument("--corpus", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--text-col", default="text")
    a = p.parse_args(argv)
    from nere.bench.hf_pipeline import CALIBRATION_DOCS, HFPipelineBaseline, calibration_texts

    base = HFPipelineBaseline(a.encoder, a.tags.split(","), a.threads, a.batch_size, a.device,
                              calibration_texts(a.corpus, CALIBRATION_DOCS, a.text_col))
    info = base.run(a.corpus, a.limit, None, text_col=a.text_col)
    info["gpu_peak_mb"] = base.gpu_peak_mb()
    print(json.dumps(info))


def _baseline(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m nere.bench.proc baseline", description="Run the PyTorch baseline once.")
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
    from nere.bench.baseline import TorchBaseline

    base = TorchBaseline(a.checkpoint, a.threads, a.batch_docs, a.device, a.re_checkpoint)
    with tempfile.TemporaryDirectory(prefix="nere-bench-") as tmp:
        info = base.run(a.corpus, a.limit, Path(tmp) / "entities.parquet", a.id_col, a.text_col)
    info["gpu_peak_mb"] = base.gpu_peak_mb()
    print(json.dumps(info))


def _main(argv: Sequence[str]) -> None:
    _write_hwm_at_exit()
    if argv[:1] == ["extract"]:
        from nere.cli import main

        main(list(argv), prog_name="nere")
    elif argv[:1] == ["baseline"]:
        _baseline(argv[1:])
    elif argv[:1] == ["hf-baseline"]:
        _hf_baseline(argv[1:])
    else:
        sys.exit("usage: python -m nere.bench.proc {extract|baseline|hf-baseline} ARGS...")


if __name__ == "__main__":
    _main(sys.argv[1:])
