"""The RE kinds as an earlier revision computed them vs now, on the same checkpoints.

    python scripts/compare_re_forms.py --rev 99644aa --kinds bilstm,bilstm-att,acnn --threads 2 \
        [--export-old runs/bundles --precision fp32]

Loads ``train/models/re.py`` of git revision ``--rev`` under another module name (its
registrations switched off), builds each kind's model of that revision with the weights of
``runs/conll04-re-KIND`` (the parameters are the same; what moved between stages is the
computation), and times ``predict_re`` on the CoNLL04 test split (gold entities) with the
old and the new classes in turn, in one process: the PyTorch side of the change. Prints
whether the predicted labels are identical (they are for the recurrent kinds; ACNN's input
attention changed, so its labels differ). ``--export-old DIR`` also writes the old form as
bundles ``DIR/conll04-re-KIND-PRECISION-oldform``, for `scripts/compare_re_bundles.py`.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import time
import types
from pathlib import Path

import torch

from nere.export.bundle import write_bundle
from nere.train.checkpoint import load_checkpoint
from nere.train.datasets import load_dataset
from nere.train.re_task import predict_re

CLASSES = {"bilstm": "BiLSTMRE", "bilstm-att": "BiLSTMAttentionRE", "acnn": "ACNN"}


def old_module(rev: str) -> types.ModuleType:
    """``train/models/re.py`` at ``rev``, executed without registering its kinds."""
    src = subprocess.run(["git", "show", f"{rev}:train/models/re.py"], check=True, capture_output=True, text=True).stdout
    src = src.replace("from nere.train.registry import register", "register = lambda *a, **k: (lambda cls: cls)")
    mod = types.ModuleType("re_at_" + rev)
    exec(compile(src, f"{rev}:train/models/re.py", "exec"), mod.__dict__)
    return mod


def labels_only(out: dict) -> list[list[str]]:
    return [[label for label, _ in sent] for sent in out["labels"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", required=True, help="git revision with the earlier train/models/re.py")
    ap.add_argument("--kinds", default="bilstm,bilstm-att,acnn")
    ap.add_argument("--runs", default="runs", help="folder holding conll04-re-KIND checkpoints")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--export-old", default=None, metavar="DIR")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "int8"])
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    old = old_module(args.rev)
    test = load_dataset("conll04", "test")
    for kind in args.kinds.split(","):
        ckpt = Path(args.runs) / f"conll04-re-{kind}"
        new_model, feat, config = load_checkpoint(ckpt)
        old_model = getattr(old, CLASSES[kind])(new_model.config)
        old_model.load_state_dict(new_model.state_dict())
        old_model.task, old_model.kind = new_model.task, new_model.kind
        new_model.eval(), old_model.eval()
        seconds: dict[str, list[float]] = {"old": [], "new": []}
        outs: dict[str, dict] = {}
        for _ in range(args.rounds + 1):  # the first round warms up
            for name, model in (("old", old_model), ("new", new_model)):
                t0 = time.perf_counter()
                outs[name] = predict_re(model, feat, test)
                seconds[name].append(time.perf_counter() - t0)
        o, n = statistics.median(seconds["old"][1:]), statistics.median(seconds["new"][1:])
        same = labels_only(outs["old"]) == labels_only(outs["new"])
        gap = max((abs(a[1] - b[1]) for s, t in zip(outs["old"]["labels"], outs["new"]["labels"])
                   for a, b in zip(s, t)), default=0.0)
        print(f"{kind}: PyTorch predict_re, {len(test)} test sentences, {args.threads} threads: "
              f"{args.rev} {o:.3f} s, now {n:.3f} s, {o / n:.2f}x; identical labels: {same}"
              + (f", largest probability difference {gap:.1e}" if same else ""))
        if args.export_old:
            out = Path(args.export_old) / f"conll04-re-{kind}-{args.precision}-oldform"
            write_bundle(old_model, config, ckpt / "tokenizer.json", out, precision=args.precision,
                         command=f"scripts/compare_re_forms.py --rev {args.rev} (old form of {ckpt})", overwrite=True)
            print(f"  old form written to {out}")


if __name__ == "__main__":
    main()
