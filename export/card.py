"""The model card (README.md) inside a bundle folder, written from its manifest alone.

    python -m nere.export.card BUNDLE        # rewrite BUNDLE/README.md

Everything on the card comes from manifest.json (what the model is, labels, how it was
trained, the figures ``--verify`` measured), so the card can be regenerated at any time
and never disagrees with the bundle. The card is not hashed: editing it never stops the
bundle from loading (docs/bundle-format.md).
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click

from nere.engine.manifest import CARD, Manifest

TASK_WORDS = {"ner": "named entity recognition", "re": "relation classification (behind an NER bundle)",
              "joint": "joint entity and relation extraction"}
_SCORE_KEYS = ("precision", "recall", "f1", "macro_f1", "micro_f1")


def training_record(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """What a checkpoint's metrics.json says about its training, trimmed for made_by.training."""
    if not metrics.get("command"):
        return None
    test = metrics.get("test") or {}
    parts = {p: test[p] for p in ("ner", "re", "e2e") if isinstance(test.get(p), dict)} or {"ner": test}
    return {
        "command": metrics["command"],
        "dataset": metrics.get("dataset"),
        "split_sizes": metrics.get("split_sizes"),
        "best_epoch": metrics.get("best_epoch"),
        "hardware": metrics.get("hardware"),
        "seconds": metrics.get("seconds"),
        "test": {p: {k: v[k] for k in _SCORE_KEYS if isinstance(v.get(k), (int, float))} for p, v in parts.items()},
    }


def rebuild_command(m: Manifest) -> str:
    """The export command with the int8 policy the bundle was built with named explicitly,
    so it rebuilds this bundle even when ``auto`` or the default policy would choose otherwise."""
    words = shlex.split(m.made_by.get("command") or "")
    policy = m.int8_policy()
    if not words or m.precision != "int8" or policy is None:
        return " ".join(shlex.quote(w) for w in words)
    words = [w for w in words if not w.startswith("--int8-policy=")]
    if "--int8-policy" in words[:-1]:
        words[words.index("--int8-policy") + 1] = policy
    else:
        words += ["--int8-policy", policy]
    return " ".join(shlex.quote(w) for w in words)


def _f(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def _prf(d: dict[str, Any] | None) -> str:
    return "-" if not d else f"P {_f(d.get('precision'))} / R {_f(d.get('recall'))} / F1 {_f(d.get('f1'))}"


def card(m: Manifest, name: str) -> str:
    """The card's Markdown."""
    made = m.made_by
    training = made.get("training") or {}
    lines = [
        f"# {name}",
        "",
        f"A {TASK_WORDS[m.task]} model (`{m.model}`, {m.precision}) exported as a NERE bundle: "
        f"the torch-free engine runs it ({_usage(m, name)}). "
        f"{made.get('bundle_bytes', 0) / 1e6:.1f} MB; format: docs/bundle-format.md.",
        "",
        "## Labels",
        "",
    ]
    if m.ner:
        lines.append(f"- Entities ({m.ner['tag_scheme']}, {m.ner['decoding']} decoding): {', '.join(m.ner['entity_labels'])}")
    if m.re:
        lines.append(f"- Relations (negative label `{m.re['negative_label']}`): {', '.join(m.re['relation_labels'][1:])}")
        if m.task == "re" and m.re.get("entity_labels"):
            lines.append(f"- Between entities of the types: {', '.join(m.re['entity_labels'])}")
    if m.features:
        lines += ["", f"Extra per-token inputs, computed by the engine from the text: {', '.join(m.feature_inputs)} "
                      "(data files in the bundle; manifest: `features`)."]
    lines += ["", "## Rebuild", "", "With the current code, from the dataset:", "", "```"]
    if training.get("command"):
        lines.append(training["command"])
    lines += [rebuild_command(m), "```", ""]
    if m.precision == "int8" and m.int8_policy():
        lines += [f"The export names the int8 policy this bundle was quantized with (`{m.int8_policy()}`)."
                  + (" It was chosen by `--int8-policy auto` on the dev split (manifest: "
                     "`made_by.int8_policy_selection`); auto may choose otherwise as its candidates change."
                     if made.get("int8_policy_selection") else ""), ""]
    if training:
        lines += [f"Trained on `{training.get('dataset')}` (train/dev/test sentences: {training.get('split_sizes')}), "
                  f"epoch {training.get('best_epoch')} selected on dev, on {training.get('hardware')} in "
                  f"{_f_int(training.get('seconds'))} s.", ""]
    lines += _measured(m, training)
    lines += _evaluations(m)
    return "\n".join(lines) + "\n"


def _trained(d: dict[str, Any] | None) -> str:
    """A PyTorch figure from training's own test evaluation (sentences, not the engine)."""
    return f"{_prf(d)} (`nere train`'s test evaluation)" if d else "-"


def _f_int(v: Any) -> str:
    return f"{v:.0f}" if isinstance(v, (int, float)) else "-"


def _measured(m: Manifest, training: dict[str, Any]) -> list[str]:
    splits = [s for s, v in m.metrics.items() if isinstance(v, dict) and v]
    if not splits:
        return ["## Measured", "", "Not verified: export with `--verify DATASET` to measure it.", ""]
    split = "test" if "test" in splits else splits[0]
    v = m.metrics[split]
    head = v.get("headline") or {}
    torch = training.get("test") or {}
    fp = "PyTorch fp32 checkpoint"
    rows = [f"| | this bundle ({m.precision}) | {fp} |", "|---|---|---|"]
    if "f1" in v and m.ner:
        rows.append(f"| entities, strict F1 (sentences as the model sees them) | {_f(v.get('f1'))} | {_f(v.get('torch_f1'))} |")
    re_f1, re_torch = (v.get("re_f1"), v.get("re_torch_f1")) if m.ner else (v.get("f1"), v.get("torch_f1"))
    if m.re and re_f1 is not None:
        rows.append(f"| relations on gold entities, macro F1 | {_f(re_f1)} | {_f(re_torch)} |")
    engine = v.get("engine") or {}
    if engine.get("entities"):
        rows.append(f"| entities through the engine | {_prf(engine['entities'])} | {_trained(torch.get('ner') if m.task == 'ner' else None)} |")
    if engine.get("triples"):
        rows.append(f"| end-to-end triples through the engine | {_prf(engine['triples'])} | {_trained(torch.get('e2e'))} |")
    lines = [f"## Measured on the {split} split of `{v.get('dataset')}`"
             + (f" (first {v['limit']} sentences)" if v.get("limit") else f" ({v.get('sentences')} sentences)"), ""]
    if head:
        lines += [f"Headline: **{head.get('metric')} {_f(head.get('value'))}** (through the {head.get('through')}).", ""]
    lines += rows + [""] + _against_fp32(m, v)
    what = "relation labels" if m.task == "re" else "entities"
    lines.append(f"Sentences with identical {what}, bundle vs PyTorch: {_f(v.get('agreement'))}; parity "
                 + ("passed." if v.get("passed") else f"FAILED ({'; '.join(v.get('problems') or [])})."))
    lines += ["", f"Figures come from `metrics.{split}` (written by `nere export --verify`) and "
              "`made_by.training` of manifest.json; `nere evaluate BUNDLE --dataset ...` recomputes "
              "the engine figures.", ""]
    return lines


def _usage(m: Manifest, name: str) -> str:
    """How to run the bundle: an RE-only bundle goes behind an NER bundle with the same entity labels."""
    if m.task == "re":
        return f"`nere extract INPUT --model NER_BUNDLE --re-model {name} --out DIR`, with an NER bundle of its entity labels"
    return f"`nere extract INPUT --model {name} --out DIR`"


def _against_fp32(m: Manifest, v: dict[str, Any]) -> list[str]:
    """One line: this bundle vs the fp32 bundle of the same checkpoint through the engine
    (what an int8 bundle's gate compares), when --verify measured it."""
    fp32, engine, loss = v.get("engine_fp32") or {}, v.get("engine") or {}, v.get("engine_loss") or {}
    parts = [f"{t} F1 {_f(engine[t]['f1'])} vs {_f(fp32[t]['f1'])}" for t in ("entities", "triples")
             if t in loss and engine.get(t) and fp32.get(t)]
    if not parts:
        return []
    tol = (v.get("thresholds") or {}).get("max_engine_loss")
    return [f"Through the engine, {m.precision} vs the fp32 bundle of the same checkpoint: {'; '.join(parts)}"
            + (f" (at most {tol:g} F1 may be lost)." if tol is not None else "."), ""]


def _evaluations(m: Manifest) -> list[str]:
    """The other datasets and forms the bundle was scored on (``nere evaluate BUNDLE --record``)."""
    if not m.evaluations:
        return []
    lines = ["## Also measured through the engine", "",
             "| dataset | split | documents | entities P / R / F1 | triples P / R / F1 | command |", "|---|---|---|---|---|---|"]
    for r in m.evaluations:
        lines.append(f"| `{r.get('dataset')}` | {r.get('split')} | {r.get('documents')} | {_prf(r.get('entities'))} | "
                     f"{_prf(r.get('triples')) if r.get('triples') else '-'} | `{r.get('command')}` |")
    return lines + [""]


def write_card(folder: str | Path) -> Path:
    """Write ``folder/README.md`` from the folder's manifest."""
    folder = Path(folder)
    path = folder / CARD
    path.write_text(card(Manifest.read(folder), folder.name), encoding="utf-8")
    return path


@click.command()
@click.argument("bundles", nargs=-1, type=click.Path(exists=True, file_okay=False))
def main(bundles: tuple[str, ...]) -> None:
    """Rewrite the model card (README.md) of each of BUNDLES from its manifest."""
    for b in bundles:
        click.echo(write_card(b))


if __name__ == "__main__":
    main()

