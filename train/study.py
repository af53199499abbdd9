"""The model comparison behind `nere study`: its plan of runs, their records, the result tables.

The plan is the NERE project's comparison: four NER kinds, five RE kinds (gold
entities) and the joint model under several loss weightings (ner + b*re [+ c*transe])
and learned (uncertainty) weights. Each run is a `nere train ...` subprocess writing
``OUT/<run-name>/`` (a checkpoint with metrics.json) and ``OUT/logs/<run-name>.log``;
a run whose metrics.json exists is skipped, so an interrupted study resumes where it
stopped. At the end ``OUT/results.json`` (one record per run, test split) and
``OUT/tables.md`` (NER, RE, joint tables) are rewritten from every metrics.json found.
``--candidates annotated`` runs the RE kinds on the gold-relation pairs only (their own
run names and table), the setup of published sentence-level SanWen results.
"""
from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

NER_KINDS = ("bilstm", "bilstm-crf", "bert-softmax", "bert-crf")
RE_KINDS = ("bert-multitask", "bert-softmax", "bilstm", "bilstm-att", "acnn")
JOINT_WEIGHTINGS = ((1, 1), (1, 5), (1, 10), (5, 1), (1, 8), (1, 15))  # (ner, re); transe at its default
JOINT_KIND = "bert-crf-multitask"


@dataclass
class Run:
    """One training run of the study."""

    name: str
    task: str  # ner | re | joint
    model: str
    epochs: int
    args: list[str] = field(default_factory=list)  # extra `nere train <task>` options

    def argv(self, dataset: str, out: Path, epochs: int, common: Sequence[str]) -> list[str]:
        head = ["train", self.task] + (["--model", self.model] if self.task != "joint" else [])
        return head + ["--dataset", dataset, "--out", str(out / self.name), "--epochs", str(epochs),
                       *self.args, *common, "--quiet"]


# RE on the annotated candidate set (gold-relation pairs only): (epochs, options) per kind,
# the settings of the SanWen runs. The pairs are few (no negatives), so the BERT kinds
# train the small random BERT at a higher rate; every kind stops early on dev macro F1.
_SMALL_BERT = ["--bert-config", '{"num_hidden_layers":2}', "--max-length", "128", "--lr", "5e-4"]
ANNOTATED_RE: dict[str, tuple[int, list[str]]] = {
    "bilstm": (30, ["--patience", "5", "--batch-size", "32"]),
    "bilstm-att": (12, ["--lr", "2e-3", "--patience", "3", "--batch-size", "32"]),
    "acnn": (30, ["--patience", "5", "--batch-size", "32"]),
    "bert-softmax": (12, [*_SMALL_BERT, "--patience", "3", "--batch-size", "32"]),
    "bert-multitask": (12, [*_SMALL_BERT, "--patience", "3", "--batch-size", "32"]),
}


def is_bert(task: str, model: str) -> bool:
    return task == "joint" or model.startswith("bert")


def slug(dataset: str) -> str:
    """The dataset part of run names: a registry name as is, a path by its last component."""
    return Path(dataset).stem if ("/" in dataset or dataset.endswith(".jsonl")) else dataset


def re_run_name(dataset: str, kind: str, candidates: str = "all") -> str:
    """``<dataset>-re-<kind>``; runs on another candidate set say it: ``<dataset>-re-annotated-<kind>``."""
    return f"{dataset}-re-{kind}" if candidates == "all" else f"{dataset}-re-{candidates}-{kind}"


def plan(dataset: str, candidates: str = "all") -> list[Run]:
    """Every run of the comparison, with the settings used for the CoNLL04 CPU runs.

    NER as the NER runs of docs/results.md (BERT 1e-4 for 20 epochs, BiLSTM 2e-3 for 40,
    early stopping after 5 epochs without dev gain). RE: BERT kinds fine-tune at 1e-4 for
    10 epochs, BiLSTM/ACNN at 1e-3 for 15 (patience 4). Joint: 1e-4 for 10 epochs.
    ``--epochs-scale`` / ``--epochs`` resize them all. ``candidates`` is the RE runs'
    candidate set (`nere train re --candidates`); the ``annotated`` runs use the settings
    of ``ANNOTATED_RE`` (docs/experiments/sanwen-re.md) and their own run names.
    """
    dataset = slug(dataset)
    ner_bert, ner_lstm = ["--lr", "1e-4", "--patience", "5"], ["--lr", "2e-3", "--patience", "5"]
    runs = [Run(f"{dataset}-ner-{k}", "ner", k, 20 if k.startswith("bert") else 40,
                ner_bert if k.startswith("bert") else ner_lstm) for k in NER_KINDS]
    if candidates == "all":
        runs += [Run(re_run_name(dataset, k), "re", k, 10 if k.startswith("bert") else 15,
                     ["--lr", "1e-4"] if k.startswith("bert") else ["--patience", "4"]) for k in RE_KINDS]
    else:
        runs += [Run(re_run_name(dataset, k, candidates), "re", k, ANNOTATED_RE[k][0],
                     ["--candidates", candidates, *ANNOTATED_RE[k][1]]) for k in RE_KINDS]
    joint = ["--lr", "1e-4"]
    runs += [Run(f"{dataset}-joint-{a}+{b}", "joint", JOINT_KIND, 10,
                 joint + ["--ner-weight", str(a), "--re-weight", str(b)]) for a, b in JOINT_WEIGHTINGS]
    runs.append(Run(f"{dataset}-joint-learned", "joint", JOINT_KIND, 10, joint + ["--learned-weights"]))
    return runs


def select(runs: Sequence[Run], only: Sequence[str]) -> list[Run]:
    """Runs whose task, model or name matches one of ``only`` (names may use * wildcards)."""
    if not only:
        return list(runs)
    pats = [p.strip() for o in only for p in o.split(",") if p.strip()]
    picked = [r for r in runs if any(p in (r.task, f"{r.task}-{r.model}") or fnmatch.fnmatch(r.name, p)
                                     or fnmatch.fnmatch(r.name, f"*-{p}") for p in pats)]
    if not picked:
        raise ValueError(f"{', '.join(pats)} matches no run; runs: {', '.join(r.name for r in runs)}")
    return picked


# ------------------------------------------------------------------------------- records
def _pick(d: dict[str, Any], keys: Sequence[str], prefix: str = "") -> dict[str, float]:
    return {prefix + k: float(d[k]) for k in keys if isinstance(d.get(k), (int, float))}


def record_of(m: dict[str, Any]) -> dict[str, Any]:
    """A results.json record from a run's metrics.json (test split, fp32 PyTorch model).

    NER: token accuracy, strict entity P/R/F1. RE: accuracy, macro P/R/F1 (as precision/
    recall/f1) and micro. Joint: the RE figures on gold entities at the top level (the
    joint table's convention), plus ``e2e_*`` (strict triples) and ``ner_*``.
    """
    test = m["test"]
    task = m["task"]
    if task == "ner":
        metrics = _pick(test, ("accuracy", "precision", "recall", "f1"))
    elif task == "re":
        metrics = _pick(test, ("accuracy", "precision", "recall", "f1", "macro_f1", "micro_precision",
                               "micro_recall", "micro_f1"))
    else:
        re, ner, e2e = test["re"], test["ner"], test["e2e"]
        metrics = _pick(re, ("accuracy", "macro_precision", "macro_recall", "macro_f1", "micro_f1"))
        metrics.update(precision=re["macro_precision"], recall=re["macro_recall"], f1=re["macro_f1"])
        metrics.update(_pick(ner, ("accuracy", "precision", "recall", "f1"), "ner_"))
        metrics.update(_pick(e2e, ("precision", "recall", "f1"), "e2e_"))
    rec = {"task": task, "dataset": m["dataset"], "model": m["model"], "split": "test", "precision": "fp32",
           "metrics": metrics, "command": m.get("command"), "hardware": m.get("hardware"),
           "seconds": round(float(m.get("seconds", 0.0)), 1), "best_epoch": m.get("best_epoch"),
           "epochs_run": len(m.get("history", []))}
    if task == "re" and m.get("candidates", "all") != "all":
        rec["candidates"] = m["candidates"]
    if task == "joint":
        rec["weights"] = m.get("weights")
        rec["weights_label"] = m.get("weights_label")
        if test.get("weights"):
            rec["metrics"].update({f"weight_{k}": float(v) for k, v in test["weights"].items()})
    return rec


def record_key(rec: dict[str, Any]) -> str:
    """Identity of a record in a results file: kind + task + dataset + model + weights.

    Training records carry no ``kind`` (read as "train"); records of other kinds (e.g. the
    exporter's ``"kind": "export"``) of the same model are never replaced by them.
    """
    w = rec.get("weights")
    key = [rec.get("kind", "train"), rec["task"], rec["dataset"], rec["model"],
           {"learned": True} if isinstance(w, dict) and w.get("learned") else w]
    if rec.get("candidates", "all") != "all":  # keys of every-pair records stay as they were
        key.append(rec["candidates"])
    return json.dumps(key, sort_keys=True)


def merge_records(path: Path, records: Sequence[dict[str, Any]]) -> int:
    """Append ``records`` to a JSON-list file, replacing records with the same key."""
    old = json.loads(path.read_text()) if path.is_file() else []
    if not isinstance(old, list):
        raise ValueError(f"{path} is not a JSON list of records")
    new_keys = {record_key(r) for r in records}
    kept = [r for r in old if not (isinstance(r, dict) and {"task", "dataset", "model"} <= set(r) and record_key(r) in new_keys)]
    path.write_text(json.dumps(kept + list(records), indent=2, ensure_ascii=False) + "\n")
    return len(records)


# -------------------------------------------------------------------------------- tables
def _f(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) else "-"


def candidates_of_run(run: Run) -> str:
    return run.args[run.args.index("--candidates") + 1] if "--candidates" in run.args else "all"


RE_HEADINGS = {
    "all": "## RE on gold entities (macro P/R/F1 over relation labels, no_relation excluded; accuracy over all pairs)",
    "annotated": "## RE on gold entities, annotated pairs only (macro P/R/F1 over relation labels; "
                 "accuracy over the gold-relation pairs)",
}


def report_plan(dataset: str) -> list[Run]:
    """What the tables cover: the whole plan plus the RE runs on the annotated pairs."""
    return plan(dataset) + [r for r in plan(dataset, "annotated") if r.task == "re"]


def tables(records: Sequence[dict[str, Any]], runs: Sequence[Run], dataset: str) -> str:
    """NERE's three tables (NER; RE; joint per weighting) in Markdown; '-' for runs not done."""
    by_name = {r["_name"]: r for r in records}
    out = [f"# {dataset}: model comparison (test split, model selected on dev)", ""]
    out += ["## NER (strict entity P/R/F1, token accuracy)", "",
            "|model|accuracy|precision|recall|f1|epochs|seconds|", "|---|---|---|---|---|---|---|"]
    for run in (r for r in runs if r.task == "ner"):
        m = by_name.get(run.name, {}).get("metrics", {})
        rec = by_name.get(run.name, {})
        out.append(f"|{run.model}|{_f(m.get('accuracy'))}|{_f(m.get('precision'))}|{_f(m.get('recall'))}|"
                   f"{_f(m.get('f1'))}|{rec.get('epochs_run', '-')}|{rec.get('seconds', '-')}|")
    for cands, heading in RE_HEADINGS.items():
        group = [r for r in runs if r.task == "re" and candidates_of_run(r) == cands]
        if cands != "all" and not any(r.name in by_name for r in group):
            continue  # the annotated table appears once one of its runs is done
        out += ["", heading, "",
                "|model|accuracy|precision|recall|f1|micro f1|epochs|seconds|", "|---|---|---|---|---|---|---|---|"]
        for run in group:
            rec = by_name.get(run.name, {})
            m = rec.get("metrics", {})
            out.append(f"|{run.model}|{_f(m.get('accuracy'))}|{_f(m.get('precision'))}|{_f(m.get('recall'))}|"
                       f"{_f(m.get('f1'))}|{_f(m.get('micro_f1'))}|{rec.get('epochs_run', '-')}|{rec.get('seconds', '-')}|")
    out += ["", "## Joint BERT-CRF + BERT-Multitask (NER; RE on gold entities, macro; end to end: strict triples from predicted entities)", "",
            "|model|weighting|task|accuracy|precision|recall|f1|", "|---|---|---|---|---|---|---|"]
    for run in (r for r in runs if r.task == "joint"):
        rec = by_name.get(run.name, {})
        m = rec.get("metrics", {})
        label = rec.get("weights_label") or run.name.rsplit("-", 1)[-1]
        if label == "learned" and "weight_ner" in m:
            label += f" (final {m['weight_ner']:.2f}/{m['weight_re']:.2f}/{m['weight_transe']:.2f})"
        model = "BERT-CRF+BERT-Multitask"
        out.append(f"|{model}|{label}|NER|{_f(m.get('ner_accuracy'))}|{_f(m.get('ner_precision'))}|"
                   f"{_f(m.get('ner_recall'))}|{_f(m.get('ner_f1'))}|")
        out.append(f"|{model}|{label}|RE|{_f(m.get('accuracy'))}|{_f(m.get('precision'))}|{_f(m.get('recall'))}|{_f(m.get('f1'))}|")
        out.append(f"|{model}|{label}|end to end|-|{_f(m.get('e2e_precision'))}|{_f(m.get('e2e_recall'))}|{_f(m.get('e2e_f1'))}|")
    hw = sorted({r.get("hardware") for r in records if r.get("hardware")})
    out += ["", f"Hardware: {'; '.join(hw) or '-'}. Commands: see results.json (`command` of each record).", ""]
    return "\n".join(out)


def collect(out: Path, runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Records of the runs whose metrics.json exists (``_name`` = run name, dropped on write)."""
    records = []
    for run in runs:
        path = out / run.name / "metrics.json"
        if path.is_file():
            rec = record_of(json.loads(path.read_text()))
            rec["_name"] = run.name
            records.append(rec)
    return records


def write_reports(out: Path, runs: Sequence[Run], dataset: str, record: Path | None = None) -> list[dict[str, Any]]:
    records = collect(out, runs)
    clean = [{k: v for k, v in r.items() if k != "_name"} for r in records]
    (out / "results.json").write_text(json.dumps(clean, indent=2, ensure_ascii=False) + "\n")
    (out / "tables.md").write_text(tables(records, runs, dataset))
    if record is not None:
        merge_records(record, clean)
    return clean
