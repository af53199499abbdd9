"""Peak RSS and docs/s of `nere extract` under memory-related settings, one child process
per run, settings alternating within each round (what docs/benchmarks-zoo.md's "Memory
settings" table comes from).

Each setting patches the engine in the child before `nere extract` starts:

- ``pair8`` / ``pair1``: relation-stage pair-positions per call, x batch_tokens;
- ``bt2048``: ``--batch-tokens 2048`` (the default is 4096 on CPU);
- ``dg8192``: padded positions decoded together (stage-1 outputs held until decoded);
- ``arena2``: glibc malloc arenas capped at 2 (``M_ARENA_MAX``);
- ``noarena``: onnxruntime's CPU memory arena off;
- ``shrink``: onnxruntime's arena shrunk after every call (a run option);
- ``spin``: onnxruntime's intra-op threads spin while waiting.

Join settings with ``-`` (``pair1-arena2``); ``default`` changes nothing.

    python scripts/memory_settings_study.py --model artifacts/en-conll04-joint-int8 \\
        --corpus /tmp/conll04-test-2880.parquet --settings pair8,default,pair1-bt2048 --rounds 2 --out study.json
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

M_ARENA_MAX = -8  # glibc mallopt parameter (malloc.h)


def apply(setting: str) -> list[str]:
    """Patch this process for ``setting``; returns extra `nere extract` arguments."""
    import onnxruntime as ort

    import nere.engine.bundle as bundle
    import nere.engine.pipeline as pipeline
    import nere.engine.stages as stages

    parts = set(setting.split("-"))
    extra: list[str] = []
    for p in parts:
        if p.startswith("pair"):
            stages.PAIR_BUDGET_FACTOR = int(p[4:])
        elif p.startswith("bt"):
            extra += ["--batch-tokens", p[2:]]
        elif p.startswith("dg"):
            stages.DECODE_GROUP_POSITIONS = pipeline.DECODE_GROUP_POSITIONS = int(p[2:])
        elif p == "arena2":
            ctypes.CDLL(None).mallopt(M_ARENA_MAX, 2)
    options = bundle.session_options

    def patched(threads: int | None, memory_patterns: bool = True) -> ort.SessionOptions:
        so = options(threads, memory_patterns)
        if "noarena" in parts:
            so.enable_cpu_mem_arena = False
        if "spin" in parts:
            so.add_session_config_entry("session.intra_op.allow_spinning", "1")
        return so

    bundle.session_options = patched
    if "shrink" in parts:
        run = ort.InferenceSession.run
        shrink = ort.RunOptions()
        shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        ort.InferenceSession.run = lambda self, names, feeds, run_options=None: run(self, names, feeds,
                                                                                  run_options or shrink)
    return extra


def child(argv: list[str]) -> None:
    """``child SETTING EXTRACT-ARGS...``: `nere extract` with the setting applied."""
    from nere.bench import proc

    extra = apply(argv[0])
    proc._main([*argv[1:], *extra])


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--settings", required=True, help="Comma-separated settings (see the module docstring).")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    from nere.bench.command import machine_info, versions
    from nere.bench.proc import extract_cmd, measure

    settings = a.settings.split(",")
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in settings}
    started = datetime.now(timezone.utc)
    for r in range(a.rounds):
        for s in settings if r % 2 == 0 else settings[::-1]:
            with tempfile.TemporaryDirectory(prefix="nere-study-") as tmp:
                cmd = extract_cmd(a.model, a.corpus, str(Path(tmp) / "out"), "cpu", a.threads, None, None, "id", "text")
                load = [round(x, 2) for x in os.getloadavg()]
                m = measure([sys.executable, __file__, "child", s, *cmd[3:]])
                if m["returncode"]:
                    sys.exit(f"{s} failed:\n{m['output_tail'][-2000:]}")
                summary = json.loads((Path(tmp) / "out" / "summary.json").read_text())
            runs[s].append({"peak_rss_mb": m["peak_rss_mb"], "seconds": m["seconds"],
                            "documents_per_s": summary["documents_per_second"], "load_avg_at_start": load})
            print(f"[{r + 1}/{a.rounds}] {s}: peak {m['peak_rss_mb']} MB, {summary['documents_per_second']} docs/s, "
                  f"load {load[0]}", file=sys.stderr)
            out = {"schema": "nere-memory-settings/1", "created": started.isoformat(timespec="seconds"),
                   "command": "python scripts/memory_settings_study.py " + " ".join(argv), "machine": machine_info(),
                   "versions": versions(False), "rounds_done": r + (s == (settings if r % 2 == 0 else settings[::-1])[-1]),
                   "runs": runs}
            Path(a.out).write_text(json.dumps(out, indent=2) + "\n")  # after every run: a cut study keeps its runs


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        child(sys.argv[2:])
    else:
        main(sys.argv[1:])
