"""Write a model card (Markdown) next to a shipped bundle, from what was measured.

    python scripts/model_card.py artifacts/en-conll04-joint-int8 runs/conll04-joint-learned

Reads the bundle's manifest.json (export command, precision, verified test metrics) and
the checkpoint's metrics.json (training command, data, dev/test scores, hardware, time);
writes artifacts/<bundle>.md. Nothing here is typed in by hand.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def scores(d: dict, keys=("accuracy", "precision", "recall", "f1", "macro_f1", "micro_f1")) -> str:
    return ", ".join(f"{k} {fmt(d[k])}" for k in keys if isinstance(d.get(k), float))


def _moved(command: str, checkpoint: Path) -> list[str]:
    """A line when the training command wrote to another folder than the checkpoint read."""
    words = command.split()
    out = words[words.index("--out") + 1] if "--out" in words[:-1] else None
    if out is None or Path(out) == checkpoint:
        return []
    return [f"- The training run's folder `{out}` was renamed to `{checkpoint}` after training "
            "(docs/results.md, NER against the targets)."]


def card(bundle: Path, checkpoint: Path) -> str:
    man = json.loads((bundle / "manifest.json").read_text())
    met = json.loads((checkpoint / "metrics.json").read_text())
    test = met["test"]
    sizes = met.get("split_sizes")
    lines = [
        f"# Model card: `{bundle.name}`",
        "",
        f"- Task: {man['task']}; model kind: `{man['model']}`; precision: {man['precision']}; "
        f"size: {man['made_by']['bundle_bytes'] / 1e6:.1f} MB.",
        f"- Data: `{met['dataset']}` (train/dev/test sentences: {sizes}); model selected on dev "
        f"(best epoch {met.get('best_epoch')}).",
        f"- Entity labels: {', '.join(man['ner']['entity_labels']) if man.get('ner') else '-'}; "
        f"relation labels: {', '.join(man['re']['relation_labels'][1:]) if man.get('re') else '-'}.",
        f"- Trained with: `{met['command']}` on {met['hardware']} in {met['seconds']:.0f} s.",
        *_moved(met["command"], checkpoint),
        f"- Exported with: `{man['made_by']['command']}`.",
        *([f"- Tokenizer: {man['made_by']['tokenizer']}."] if man["made_by"].get("tokenizer") else []),
        "",
        "## Measured on the test split",
        "",
    ]
    if met["task"] == "joint":
        lines += [f"- PyTorch checkpoint, NER: {scores(test['ner'])}.",
                  f"- PyTorch checkpoint, RE on gold entities: {scores(test['re'])}.",
                  f"- PyTorch checkpoint, end-to-end strict triples: {scores(test['e2e'])}.",
                  f"- Loss weights: {met.get('weights')}."]
    else:
        lines += [f"- PyTorch checkpoint: {scores(test)}."]
    v = man["metrics"]["test"]
    lines += [f"- This bundle (onnxruntime, {man['precision']}), entities: F1 {fmt(v['f1'])} vs PyTorch {fmt(v['torch_f1'])}; "
              f"sentences with identical entities: {fmt(v['agreement'])}."]
    if "re_f1" in v:
        lines += [f"- This bundle, relations on gold entities: macro F1 {fmt(v['re_f1'])} vs PyTorch {fmt(v['re_torch_f1'])}."]
    lines += ["", "Numbers come from `metrics.json` of the checkpoint and `manifest.json` of the bundle; "
              "see docs/results.md for the full tables.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    bundle, checkpoint = Path(sys.argv[1]), Path(sys.argv[2])
    out = bundle.parent / f"{bundle.name}.md"
    out.write_text(card(bundle, checkpoint))
    print(out)
