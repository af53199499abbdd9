"""Dev F1 of one NER kind with or without extra per-token inputs, on a fixed budget.

Runs what `nere train ner` runs (build_ner, fit with dev-F1 selection) with the feature
options of nere.train.feature_options, on the first ``--limit`` training and
``--dev-limit`` dev sentences, and prints one JSON line (docs/experiments/features-dev.md).
"""
from __future__ import annotations

import json
import time

import click
import torch

from nere.train.datasets import load_dataset
from nere.train.feature_options import feature_options, feature_request
from nere.train.ner_task import build_ner, evaluate_ner, ner_batches
from nere.train.trainer import TrainConfig, fit


@click.command()
@click.option("--dataset", required=True)
@click.option("--model", "kind", required=True)
@click.option("--limit", default=None, type=int, help="First N training sentences.")
@click.option("--dev-limit", default=None, type=int, help="First N dev sentences.")
@click.option("--epochs", default=3, type=int)
@click.option("--batch-size", default=32, type=int)
@click.option("--lr", default=2e-3, type=float)
@click.option("--head-lr", default=None, type=float)
@click.option("--threads", default=1, type=int)
@click.option("--seed", default=13, type=int)
@feature_options
def main(dataset, kind, limit, dev_limit, epochs, batch_size, lr, head_lr, threads, seed, **opts):
    torch.set_num_threads(threads)
    train = load_dataset(dataset, "train", limit=limit)
    dev = load_dataset(dataset, "dev", limit=dev_limit)
    started = time.perf_counter()
    model, _, feat, notes = build_ner(kind, train, features=feature_request(opts))
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, head_lr=head_lr or lr, patience=epochs,
                      seed=seed, progress=False)
    result = fit(model, ner_batches(model, feat, train, batch_size), lambda m: evaluate_ner(m, feat, dev), "f1", cfg)
    best = result["best_dev"]
    print(json.dumps({"model": kind, "features": feature_request(opts), "train": len(train), "dev": len(dev),
                      "epochs": epochs, "dev_f1": best["f1"], "dev_p": best["precision"], "dev_r": best["recall"],
                      "history": result["history"], "notes": notes.get("features"),
                      "parameters": sum(p.numel() for p in model.parameters()),
                      "seconds": round(time.perf_counter() - started)}, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
