"""Time the engine's numpy Viterbi against pytorch-crf's decode, in one process.

Both decoders get the same emissions and CRF parameters; the script first checks that
they agree, then reports the median of ``--repeats`` timed runs after ``--warmup``
untimed ones, for full-length rows and for ragged rows (random lengths 1..T). Prints one
JSON line. Needs the [train] extra (torch, pytorch-crf).

    python scripts/bench_viterbi.py --threads 2
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Callable

import numpy as np
import torch
import torchcrf

from nere.engine.core.viterbi import CRFDecoder, viterbi_decode


def median_seconds(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--time", type=int, default=128)
    ap.add_argument("--tags", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    crf = torchcrf.CRF(args.tags, batch_first=True)
    with torch.no_grad():
        for p in (crf.transitions, crf.start_transitions, crf.end_transitions):
            p.copy_(torch.from_numpy(rng.normal(0, 1, tuple(p.shape)).astype(np.float32)))
    trans = crf.transitions.detach().numpy()
    start = crf.start_transitions.detach().numpy()
    end = crf.end_transitions.detach().numpy()
    emissions = rng.normal(0, 2, (args.batch, args.time, args.tags)).astype(np.float32)
    em_t = torch.from_numpy(emissions)

    result: dict[str, object] = {
        "batch": args.batch, "time": args.time, "tags": args.tags, "torch_threads": args.threads,
        "repeats": args.repeats, "warmup": args.warmup,
        "numpy": np.__version__, "torch": torch.__version__, "python": platform.python_version(),
    }
    ragged = rng.integers(1, args.time + 1, args.batch)
    ragged[0] = args.time
    for name, lengths in (("full", np.full(args.batch, args.time)), ("ragged", ragged)):
        mask = torch.from_numpy(np.arange(args.time)[None, :] < lengths[:, None])

        decoder = CRFDecoder(trans, start, end)  # kept for every call, as the engine keeps one

        def run_numpy() -> np.ndarray:
            return decoder.decode(emissions, lengths)

        def run_fresh() -> np.ndarray:  # a new decoder per call (viterbi_decode): the certificate always tried
            return viterbi_decode(emissions, lengths, trans, start, end)

        def run_torch() -> list[list[int]]:
            with torch.no_grad():
                return crf.decode(em_t, mask=mask)

        ours, theirs = run_numpy(), run_torch()
        if any(ours[b, : lengths[b]].tolist() != theirs[b] for b in range(args.batch)):
            raise SystemExit(f"{name}: numpy Viterbi and pytorch-crf disagree")
        t_np = median_seconds(run_numpy, args.warmup, args.repeats)
        t_fresh = median_seconds(run_fresh, args.warmup, args.repeats)
        t_torch = median_seconds(run_torch, args.warmup, args.repeats)
        result[name] = {
            "numpy_ms": round(t_np * 1e3, 3),
            "numpy_fresh_decoder_ms": round(t_fresh * 1e3, 3),
            "pytorch_crf_ms": round(t_torch * 1e3, 3),
            "speedup": round(t_torch / t_np, 2),  # > 1: numpy is faster
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
