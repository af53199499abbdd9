"""Parity of a bundle with its PyTorch model on a dataset split.

The bundle is opened with the engine's own loader (:func:`nere.engine.bundle.load_bundle`:
manifest, hashes, tokenizer, CRF arrays, onnxruntime CPU sessions) and featurized with
the bundle's featurizer; the PyTorch side uses the checkpoint's. Both sides go through the
same core decoding (Viterbi with the CRF arrays / argmax, ``row_char_spans``), so any
difference comes from the graph, the arrays or the tokenizer that was shipped.

Reported per split: sentence agreement (share of sentences whose decoded entities are
identical), strict entity F1 of both sides against gold, and the max abs difference of
emissions over real (unpadded) positions. Relation parity is added by
:mod:`nere.export.verify_re` for bundles with a stage 2. Then the texts go through the
engine's full pipeline (sentence splitting, windows, token-budget batches), scored by
:func:`nere.engine.score.score_predictions` exactly as ``nere evaluate BUNDLE`` scores
them: that gives the figure the bundle is sold on (``headline``: triples F1 for a joint
bundle, entity F1 for NER; an RE-only bundle needs an NER bundle in front of it in the
engine, so its headline is the relation F1 on gold entities).

An int8 bundle is judged by what it promises: its F1 through the engine (entities, and
end-to-end triples when it has relations) within a tolerance of the fp32 bundle of the same
checkpoint on the same texts (``engine_loss``). The per-sentence F1 difference against
PyTorch stays reported; it is noisier (macro F1 over rare relation labels) and is not what
users run, so it fails int8 only for an RE-only bundle, which has no engine path of its own.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from nere.engine import stages as engine_stages
from nere.engine.bundle import Bundle, load_bundle
from nere.engine.core.decode import decode_tags, kept_decoder, row_char_spans
from nere.engine.core.featurize import Batch, Featurizer
from nere.engine.core.metrics import entity_scores
from nere.engine.core.metrics import Span
from nere.engine.core.types import Example
from nere.engine.score import engine_predictions, score_predictions
from nere.export.onnx_export import torch_outputs
from nere.train.datasets.policy import flat_entities
from nere.train.features import collate_extras, length_batches, ner_items

# what a bundle must reach on the verification split: fp32 and fp16 against PyTorch per
# sentence; int8 against its fp32 bundle through the engine (max_engine_loss, one-sided), or,
# for an RE-only bundle (no engine path), against PyTorch on gold entities (max_f1_diff)
THRESHOLDS = {
    "fp32": {"min_agreement": 0.999, "max_f1_diff": 0.001},
    "fp16": {"min_agreement": 0.0, "max_f1_diff": 0.005},
    "int8": {"min_agreement": 0.0, "max_f1_diff": 0.005, "max_engine_loss": 0.005},
}


def stage1_spec(model: Any):
    """The stage-1 GraphSpec of a model: its module and output names drive the PyTorch side."""
    specs = {s.name: s for s in model.export_graphs()}
    return specs["ner"]


def run_stage1(bundle: Bundle, batch: Batch, outputs: Sequence[str]) -> dict[str, np.ndarray]:
    """The engine's stage-1 runner on a featurized batch, outputs as float32 numpy arrays."""
    got = engine_stages.run_stage1(bundle.stage1, batch, outputs)
    return {n: np.asarray(got[n], dtype=np.float32) for n in outputs}


def _masked_max_diff(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    valid = mask.astype(bool)
    return float(np.abs(a - b)[valid].max()) if valid.any() else 0.0


def _same_inputs(a: Any, b: Any) -> bool:
    """Same token ids and same extra inputs (the bundle's feature data vs the checkpoint's)."""
    if not np.array_equal(a.encoded.ids, b.encoded.ids) or set(a.extras) != set(b.extras):
        return False
    return all(np.array_equal(a.extras[n], b.extras[n]) for n in a.extras)


def ner_parity(bundle: Bundle, model: Any, featurizer: Featurizer, examples: Sequence[Example],
               batch_size: int = 32, progress: bool = True,
               engine: Sequence[Sequence[Span]] | None = None) -> dict[str, Any]:
    """Decoded entities and emissions of bundle vs PyTorch over ``examples``.

    ``engine``: the entities the engine's whole pipeline found in each text; their
    agreement with PyTorch (``engine_agreement``) also reflects sentence splitting and
    windowing, which PyTorch evaluation does not do, so it is reported, not thresholded.
    """
    if bundle.ner is None:
        raise ValueError(f"bundle {bundle.path} has no NER stage")
    spec = stage1_spec(model)
    # extra inputs: the checkpoint's feature data on the PyTorch side, the bundle's on the other
    items_t, stats = ner_items(examples, featurizer, model.tagset, getattr(model, "input_features", None))
    items_b, _ = ner_items(examples, bundle.featurizer, bundle.ner.tagset, bundle.features)
    feat_mismatch = sum(not _same_inputs(a, b) for a, b in zip(items_t, items_b))
    crf_t = kept_decoder(model.crf_arrays()) if hasattr(model, "crf_arrays") else None
    crf_b = kept_decoder(bundle.ner.crf)
    lead_t, lead_b = featurizer.lead, bundle.featurizer.lead
    pred_t: list[list] = [[] for _ in examples]
    pred_b: list[list] = [[] for _ in examples]
    max_diff = 0.0
    lengths = [len(it.tags) for it in items_t]
    batches = list(length_batches(lengths, batch_size, rng=None))
    for idx in tqdm(batches, desc="verify ner", unit="batch", disable=not progress, leave=False):
        bt = featurizer.collate([items_t[i].encoded for i in idx])
        bb = bundle.featurizer.collate([items_b[i].encoded for i in idx])
        bb.extras = {n: t.numpy() for n, t in collate_extras([items_b[i] for i in idx], lead_b,
                                                             bb.input_ids.shape[1]).items()}
        feeds = {"input_ids": bt.input_ids, "attention_mask": bt.attention_mask}
        feeds.update({n: t.numpy() for n, t in collate_extras([items_t[i] for i in idx], lead_t,
                                                              bt.input_ids.shape[1]).items()})
        em_t = torch_outputs(spec, feeds)[spec.outputs.index("emissions")]
        em_b = run_stage1(bundle, bb, ["emissions"])["emissions"]
        if em_t.shape == em_b.shape:
            max_diff = max(max_diff, _masked_max_diff(em_t, em_b, bt.attention_mask))
        else:
            max_diff = float("inf")
        tags_t = decode_tags(em_t, bt.lengths, crf_t)
        tags_b = decode_tags(em_b, bb.lengths, crf_b)
        for row, i in enumerate(idx):
            text = examples[i].text
            pred_t[i] = row_char_spans(model.tagset, tags_t[row], bt.offsets[row], lead_t, len(items_t[i].tags), text)
            pred_b[i] = row_char_spans(bundle.ner.tagset, tags_b[row], bb.offsets[row], lead_b, len(items_b[i].tags),
                                       text)
    gold = [it.gold for it in items_t]
    s_t, s_b = entity_scores(gold, pred_t), entity_scores(gold, pred_b)
    same = [sorted(a) == sorted(b) for a, b in zip(pred_t, pred_b)]
    differing = [i for i, ok in enumerate(same) if not ok]
    return {
        "sentences": len(examples),
        "agreement": sum(same) / len(same) if same else 1.0,
        "f1": s_b["f1"], "precision": s_b["precision"], "recall": s_b["recall"],
        "torch_f1": s_t["f1"], "torch_precision": s_t["precision"], "torch_recall": s_t["recall"],
        "f1_diff": abs(s_b["f1"] - s_t["f1"]),
        "max_abs_logit_diff": max_diff,
        "featurization_mismatch": feat_mismatch,
        "truncated": stats.truncated,
        **({} if engine is None else {
            "engine_agreement": sum(sorted(a) == sorted(b) for a, b in zip(pred_t, engine)) / max(1, len(engine)),
            "engine_f1": entity_scores(gold, engine)["f1"]}),
        "differing_sentences": [
            {"index": i, "text": examples[i].text, "torch": sorted(pred_t[i]), "bundle": sorted(pred_b[i])}
            for i in differing[:5]
        ],
    }


def engine_scores(bundle: Bundle | str, examples: Sequence[Example], threads: int | None = None
                  ) -> tuple[dict[str, Any] | None, list[list[Span]] | None]:
    """A bundle's scores through the engine's whole pipeline on ``examples`` (what ``nere
    evaluate`` prints), and the entities it found per text; (None, None) for an RE-only
    bundle, which the engine cannot run alone."""
    from nere.engine import Engine

    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle, device="cpu", threads=threads)
    if bundle.ner is None:
        return None, None
    entities, triples = engine_predictions(Engine(bundle), [ex.text for ex in examples])
    gold = [[(e.start, e.end, e.label) for e in flat_entities(ex.entities)[0]] for ex in examples]
    return score_predictions(entities, triples, gold, examples), entities


def engine_loss(fp32: dict[str, Any], other: dict[str, Any]) -> dict[str, float]:
    """F1 the other bundle loses against the fp32 one through the engine, per table
    (entities; triples when both extract relations). Signed: a gain is a negative loss."""
    loss = {"entities": fp32["entities"]["f1"] - other["entities"]["f1"]}
    if fp32.get("triples") is not None and other.get("triples") is not None:
        loss["triples"] = fp32["triples"]["f1"] - other["triples"]["f1"]
    return loss


def loss_problems(loss: dict[str, float], tolerance: float) -> list[str]:
    """One line per table whose loss exceeds ``tolerance`` (one-sided; NaN fails)."""
    return [f"{table} F1 through the engine {v:.4f} below the fp32 bundle's (tolerance {tolerance:g})"
            for table, v in loss.items() if not v <= tolerance]


def verify_bundle(folder: str, model: Any, featurizer: Featurizer, examples: Sequence[Example],
                  batch_size: int = 32, progress: bool = True, threads: int | None = None,
                  fp32_engine: dict[str, Any] | None = None) -> dict[str, Any]:
    """All parity metrics of a bundle (NER stage, and relations when the bundle has stage 2),
    and its scores through the engine with the ``headline`` figure. ``fp32_engine``: the
    engine scores of the checkpoint's fp32 bundle on the same examples (:func:`engine_scores`);
    given, the result also holds ``engine_fp32`` and ``engine_loss``."""
    bundle = load_bundle(folder, device="cpu", threads=threads)
    out: dict[str, Any] = {"provider": bundle.provider}
    scores, entities = engine_scores(bundle, examples)
    if scores is not None:
        out["ner"] = ner_parity(bundle, model, featurizer, examples, batch_size, progress, engine=entities)
        out["engine"] = scores
    if bundle.re is not None:
        from nere.export.verify_re import re_parity

        out["re"] = re_parity(bundle, model, featurizer, examples, batch_size, progress)
    out["headline"] = out["engine"].pop("headline") if "engine" in out else {
        "metric": "relation_macro_f1", "value": out["re"]["f1"], "through": "gold entities"}
    if fp32_engine is not None and "engine" in out:
        out["engine_fp32"] = {k: v for k, v in fp32_engine.items() if k != "headline"}
        out["engine_loss"] = engine_loss(fp32_engine, out["engine"])
    return out


def summary(result: dict[str, Any], precision: str) -> dict[str, Any]:
    """The flat metrics stored in the manifest, with a pass/fail against THRESHOLDS.

    int8 passes when no ``engine_loss`` exceeds ``max_engine_loss`` (a gain is not a loss);
    the sentence-level F1 difference vs PyTorch is recorded but does not fail it, except for
    an RE-only bundle. An int8 bundle with an engine path but no fp32 comparison fails."""
    th = THRESHOLDS[precision]
    engine_gate = precision == "int8" and "engine" in result
    flat: dict[str, Any] = {}
    problems = []
    for part in ("ner", "re"):
        r = result.get(part)
        if r is None:
            continue
        prefix = "" if part == "ner" or "ner" not in result else "re_"
        for k, v in r.items():
            if k != "differing_sentences":
                flat[prefix + k] = v
        if engine_gate:
            continue
        if not r["agreement"] >= th["min_agreement"]:  # written so that NaN fails
            problems.append(f"{part} agreement {r['agreement']:.4f} < {th['min_agreement']}")
        if not r["f1_diff"] <= th["max_f1_diff"]:
            problems.append(f"{part} F1 differs from PyTorch by {r['f1_diff']:.4f} > {th['max_f1_diff']}")
    if engine_gate:
        if "engine_loss" in result:
            problems += loss_problems(result["engine_loss"], th["max_engine_loss"])
        else:
            problems.append("int8 is judged against its fp32 bundle through the engine: engine_loss not measured")
    for key in ("engine", "headline", "engine_fp32", "engine_loss"):
        if key in result:
            flat[key] = result[key]
    flat["thresholds"] = th
    flat["passed"] = not problems
    flat["problems"] = problems
    return flat
