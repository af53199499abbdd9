"""The training loop shared by every task: AdamW, warm-up, clipping, early stopping.

Model selection uses the dev split only; the best weights (by the task's dev score)
are kept in memory and restored at the end.
"""
from __future__ import annotations

import copy
import logging
import random
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 16
    lr: float = 5e-5  # encoder learning rate for BERT; all parameters for BiLSTM
    head_lr: float = 1e-3  # heads and CRF (random init) learn faster
    warmup: float = 0.1  # share of steps
    clip: float = 1.0
    patience: int = 3  # epochs without dev improvement before stopping
    seed: int = 13
    device: str = "cpu"
    weight_decay: float = 0.01
    progress: bool = True  # progress bars
    log_epochs: bool = True  # one line per epoch, also without bars


def set_seed(seed: int) -> None:
    """Seed every generator training touches, for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no usable GPU")
    return device


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Pretrained encoder weights get ``lr``; everything else ``head_lr``; no decay on norms/biases."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_encoder = name.startswith("encoder.bert.")
        no_decay = p.ndim < 2
        groups.setdefault((is_encoder, no_decay), []).append(p)
    return [
        {"params": ps, "lr": cfg.lr if enc else cfg.head_lr, "weight_decay": 0.0 if nd else cfg.weight_decay}
        for (enc, nd), ps in groups.items()
    ]


def part_scores(metrics: dict[str, Any]) -> dict[str, float]:
    """The F1 of each scored part of a task's dev metrics (e.g. ner / re / e2e), for the epoch history."""
    return {k: float(v["f1"]) for k, v in metrics.items() if isinstance(v, dict) and isinstance(v.get("f1"), (int, float))}


class StopTraining(Exception):
    """SIGTERM during training: stop now and keep the best epoch so far."""


@contextmanager
def stop_on_sigterm():
    """Turn SIGTERM into StopTraining, so that a run cut short still ends with its best epoch saved."""
    def handler(signum, frame):
        raise StopTraining()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _to_device(batch: dict[str, Any], device: str) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def fit(
    model: torch.nn.Module,
    make_batches: Callable[[random.Random], Sequence[dict[str, Any]]],
    evaluate: Callable[[torch.nn.Module], dict[str, Any]],
    score_key: str,
    cfg: TrainConfig,
) -> dict[str, Any]:
    """Train ``model`` in place; returns history and the best dev metrics.

    ``make_batches(rng)`` yields collated batches for one epoch; ``evaluate(model)`` returns
    dev metrics, of which ``score_key`` selects the model.
    """
    from transformers import get_linear_schedule_with_warmup

    set_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    model.to(cfg.device)
    opt = torch.optim.AdamW(param_groups(model, cfg))
    steps_per_epoch = len(make_batches(random.Random(0)))
    total = max(1, steps_per_epoch * cfg.epochs)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup * total), total)
    best_score, best_state, best_metrics, bad_epochs = -1.0, None, {}, 0
    history = []
    started = time.perf_counter()
    stopped = False
    with stop_on_sigterm():
        try:
            for epoch in range(1, cfg.epochs + 1):
                model.train()
                batches = make_batches(rng)
                bar = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", disable=not cfg.progress, leave=False)
                total_loss = 0.0
                for i, batch in enumerate(bar, 1):
                    loss = model.loss(_to_device(batch, cfg.device))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                    opt.step()
                    sched.step()
                    total_loss += loss.item()
                    if i % 10 == 0:
                        bar.set_postfix(loss=f"{total_loss / i:.4f}")
                model.eval()
                with torch.no_grad():
                    metrics = evaluate(model)
                score = float(metrics[score_key])
                history.append({"epoch": epoch, "loss": total_loss / max(1, len(batches)), "dev": metrics.get(score_key),
                                "dev_parts": part_scores(metrics)})
                improved = score > best_score
                log.info("epoch %d loss %.4f dev %s %.4f%s", epoch, history[-1]["loss"], score_key, score, " *" if improved else "")
                if cfg.progress or cfg.log_epochs:
                    parts = "".join(f"  {k} {v:.4f}" for k, v in history[-1]["dev_parts"].items())
                    tqdm.write(f"epoch {epoch}: loss {history[-1]['loss']:.4f}  dev {score_key} {score:.4f}"
                               f"{'  (best)' if improved else ''}{parts}")
                if improved:
                    best_score, best_metrics, bad_epochs = score, metrics, 0
                    best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
                else:
                    bad_epochs += 1
                    if bad_epochs >= cfg.patience:
                        break
        except StopTraining:
            if best_state is None:
                raise
            stopped = True
            log.warning("SIGTERM: stopped in epoch %d; keeping the best epoch so far", len(history) + 1)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"history": history, "best_dev": best_metrics, "best_epoch": max(history, key=lambda h: h["dev"] or 0)["epoch"],
            "seconds": time.perf_counter() - started, "epochs_run": len(history), "stopped": stopped}
