"""Relation parity of a two-stage bundle with its PyTorch model, on gold entities.

Candidate pairs and their stage-2 inputs come from training's pair featurization
(:mod:`nere.train.re_features`, core ``candidate_pairs``), built once with the
checkpoint's featurizer and once with the bundle's; both sides classify every candidate
pair of the split, exactly as ``nere evaluate`` scores an RE model.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from nere.engine.bundle import Bundle
from nere.engine.core.featurize import Featurizer
from nere.engine.core.metrics import relation_scores
from nere.engine.core.types import NO_RELATION, Example
from nere.export.onnx_export import torch_outputs
from nere.export.verify import _masked_max_diff, run_stage1
from nere.train.features import length_batches
from nere.train.re_features import collate_pairs, pair_sentences

STAGE2_KEYS = ("hidden", "pair_index", "head_mask", "tail_mask", "head_type", "tail_type")


def _numpy(batch: dict[str, Any], key: str) -> np.ndarray:
    v = batch[key]
    return v.numpy() if hasattr(v, "numpy") else np.asarray(v)


def re_parity(bundle: Bundle, model: Any, featurizer: Featurizer, examples: Sequence[Example],
              batch_size: int = 32, progress: bool = True) -> dict[str, Any]:
    """Relation labels of every gold-entity candidate pair: bundle vs PyTorch."""
    if bundle.re is None or bundle.stage2 is None:
        raise ValueError(f"bundle {bundle.path} has no relation stage")
    specs = {s.name: s for s in model.export_graphs()}
    s1, s2 = specs["ner"], specs["re"]
    sents_t, stats = pair_sentences(examples, featurizer, model.relation_labels, model.entity_labels)
    sents_b, _ = pair_sentences(examples, bundle.featurizer, bundle.re.relation_labels, bundle.re.entity_labels)
    rels_t, rels_b = list(model.relation_labels), bundle.re.relation_labels
    pred_t = [[NO_RELATION] * len(s.pairs) for s in sents_t]
    pred_b = [[NO_RELATION] * len(s.pairs) for s in sents_b]
    todo = [i for i, s in enumerate(sents_t) if s.usable]
    lengths = [len(sents_t[i].encoded.ids) for i in todo]
    max_logit, max_hidden = 0.0, 0.0
    out_name = "logits" if "logits" in bundle.stage2.outputs else next(iter(bundle.stage2.outputs))
    batches = list(length_batches(lengths, batch_size, rng=None))
    for idx in tqdm(batches, desc="verify re", unit="batch", disable=not progress, leave=False):
        rows = [todo[j] for j in idx]
        bt = collate_pairs([sents_t[i] for i in rows], featurizer)
        bb = collate_pairs([sents_b[i] for i in rows], bundle.featurizer)
        # PyTorch: the very modules that were exported
        feeds1 = {"input_ids": _numpy(bt, "input_ids"), "attention_mask": _numpy(bt, "attention_mask")}
        hidden_t = torch_outputs(s1, feeds1)[s1.outputs.index("hidden")]
        feeds2 = {k: (hidden_t if k == "hidden" else _numpy(bt, k)) for k in STAGE2_KEYS}
        logits_t = torch_outputs(s2, feeds2)[0]
        # bundle: onnxruntime sessions opened by the engine's loader
        hidden_b = run_stage1(bundle, bb["batch"], ["hidden"])["hidden"]
        values = {k: (hidden_b if k == "hidden" else _numpy(bb, k)) for k in STAGE2_KEYS}
        feeds = {n: np.ascontiguousarray(values[n], dtype=t) for n, t in bundle.stage2.inputs.items()}
        logits_b = np.asarray(bundle.stage2.session.run([out_name], feeds)[0], dtype=np.float32)
        mask = _numpy(bt, "attention_mask")
        if hidden_t.shape == hidden_b.shape and logits_t.shape == logits_b.shape:
            max_hidden = max(max_hidden, _masked_max_diff(hidden_t, hidden_b, mask))
            if len(logits_t):
                max_logit = max(max_logit, float(np.abs(logits_t - logits_b).max()))
        else:
            max_hidden = max_logit = float("inf")
        for (r, p), kt, kb in zip(bt["pair_ref"], logits_t.argmax(-1), logits_b.argmax(-1)):
            pred_t[rows[r]][p] = rels_t[int(kt)]
            pred_b[rows[r]][p] = rels_b[int(kb)]
    gold = [g for s in sents_t for *_, g in s.pairs]
    flat_t = [p for ps in pred_t for p in ps]
    flat_b = [p for ps in pred_b for p in ps]
    sc_t, sc_b = relation_scores(gold, flat_t), relation_scores(gold, flat_b)
    with_pairs = [i for i, s in enumerate(sents_t) if s.pairs]
    same = [pred_t[i] == pred_b[i] for i in with_pairs]
    differing = [with_pairs[k] for k, ok in enumerate(same) if not ok]
    return {
        "sentences": len(with_pairs),
        "pairs": len(gold),
        "agreement": sum(same) / len(same) if same else 1.0,
        "pair_agreement": sum(a == b for a, b in zip(flat_t, flat_b)) / len(gold) if gold else 1.0,
        "f1": sc_b["macro_f1"], "micro_f1": sc_b["micro_f1"],
        "torch_f1": sc_t["macro_f1"], "torch_micro_f1": sc_t["micro_f1"],
        "f1_diff": abs(sc_b["macro_f1"] - sc_t["macro_f1"]),
        "max_abs_logit_diff": max_logit,
        "max_abs_hidden_diff": max_hidden,
        "lost_pairs": stats.lost_pairs,
        "differing_sentences": [
            {"index": i, "text": examples[i].text,
             "pairs": [(h, t, a, b) for (h, t, _), a, b in zip(sents_t[i].pairs, pred_t[i], pred_b[i]) if a != b]}
            for i in differing[:5]
        ],
    }
