"""scripts/ner_results.py: the NER section is replaced in place, never appended a second time."""
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("ner_results", Path(__file__).parents[1] / "scripts" / "ner_results.py")
ner_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ner_results)

REC = {"task": "ner", "dataset": "msra", "model": "bilstm-crf", "split": "test", "precision": "fp32",
       "metrics": {"accuracy": 0.98, "precision": 0.88, "recall": 0.85, "f1": 0.866},
       "command": "nere train ner --model bilstm-crf --dataset msra --out runs/x", "hardware": "cpu",
       "seconds": 1013.0, "best_epoch": 15, "epochs_run": 15}


def test_section_replaced_in_place():
    text = ner_results.section([REC], ["msra"])
    old = f"# R\n\nbefore\n\n{ner_results.BEGIN}\nstale\n{ner_results.END}\n\nafter\n"
    new = ner_results.replace_section(old, text)
    assert new.count(ner_results.BEGIN) == 1 and "stale" not in new
    assert new.index("before") < new.index("|bilstm-crf|0.9800|") < new.index("after")
    assert "|bilstm|not run|" in new


def test_unpaired_markers_refused():
    with pytest.raises(SystemExit):
        ner_results.replace_section(f"x\n{ner_results.END}\n", "t")
    with pytest.raises(SystemExit):
        ner_results.replace_section(f"{ner_results.BEGIN}\n{ner_results.END}\n{ner_results.BEGIN}\n", "t")


def test_committed_results_section_matches_records():
    root = Path(__file__).parents[1]
    records = ner_results.records_from_results(root / "docs" / "results.json", ["conll04", "msra"])
    text = ner_results.section(records, ["conll04", "msra"])
    md = (root / "docs" / "results.md").read_text()
    assert md.count(ner_results.BEGIN) == 1 and text in md
