"""Tiny bundles for engine tests, built without torch (onnx.helper + tokenizers).

The models are lookup tables, so their output is known exactly:
- stage 1: ``emissions = E[input_ids] * mask`` and ``hidden = H[input_ids]``; a word's
  tag is fixed by the vocabulary below (e.g. "alice" -> B-Per, "smith" -> I-Per);
- stage 2: masked mean pooling of ``hidden`` over the head/tail tokens, then a MatMul
  whose weights encode Per->Org = Work_For and Per/Org->Loc = Located_In. The ``typed``
  variant takes the Work_For part from head_type/tail_type embeddings instead, so it
  only comes out right when the engine feeds the type ids correctly.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

from nere.engine.core.tags import TagSet

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
ENTITY_LABELS = ["Per", "Org", "Loc"]
RELATIONS = ["no_relation", "Work_For", "Located_In"]
# word -> tag (BIO); everything else, [UNK] included, is O
WORD_TAGS = {
    "alice": "B-Per", "bob": "B-Per", "carol": "B-Per", "smith": "I-Per", "jones": "I-Per",
    "acme": "B-Org", "globex": "B-Org", "corp": "I-Org", "inc": "I-Org",
    "paris": "B-Loc", "london": "B-Loc", "city": "I-Loc",
    "张": "B-Per", "王": "B-Per", "李": "B-Per", "三": "I-Per", "四": "I-Per",
    "华": "B-Org", "为": "I-Org", "北": "B-Loc", "京": "I-Loc",
}
PLAIN_WORDS = ["the", "works", "for", "in", "lives", "a", "and", "of", "是", "在", "的", "人"]
VOCAB = SPECIALS + list(WORD_TAGS) + PLAIN_WORDS
TOKEN_ID = {w: i for i, w in enumerate(VOCAB)}
TAGSET = TagSet("BIO", tuple(ENTITY_LABELS))


def tag_of(word: str) -> str:
    return WORD_TAGS.get(word.lower(), "O")


def make_tokenizer(kind: str) -> Tokenizer:
    """'word': lower-cased words and punctuation runs; 'char': every non-space character."""
    tok = Tokenizer(models.WordLevel(dict(TOKEN_ID), unk_token="[UNK]"))
    if kind == "word":
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
    elif kind == "char":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")]
        )
    else:
        raise ValueError(kind)
    return tok


def _tables() -> tuple[np.ndarray, np.ndarray]:
    tags = TAGSET.tags
    emissions = np.zeros((len(VOCAB), len(tags)), dtype=np.float32)
    hidden = np.zeros((len(VOCAB), 4), dtype=np.float32)  # [is_per, is_org, is_loc, 1]
    hidden[:, 3] = 1.0
    for i, w in enumerate(VOCAB):
        tag = WORD_TAGS.get(w, "O")
        emissions[i, tags.index(tag)] = 5.0
        if tag != "O":
            hidden[i, ENTITY_LABELS.index(tag[2:])] = 1.0
    return emissions, hidden


def _relation_weights(typed: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W over concat(head_pool, tail_pool) -> logits; type tables for the typed variant."""
    w = np.zeros((8, len(RELATIONS)), dtype=np.float32)
    w[3, 0] = w[7, 0] = 0.25  # no_relation: constant 0.5
    if not typed:  # Work_For = is_per(head) + is_org(tail) - 1
        w[0, 1], w[4 + 1, 1], w[3, 1], w[7, 1] = 1.0, 1.0, -0.5, -0.5
    # Located_In = is_per(head) + is_org(head) + is_loc(tail) - 1
    w[0, 2], w[1, 2], w[4 + 2, 2], w[3, 2], w[7, 2] = 1.0, 1.0, 1.0, -0.5, -0.5
    head_t = np.zeros((len(ENTITY_LABELS), len(RELATIONS)), dtype=np.float32)
    tail_t = np.zeros_like(head_t)
    if typed:  # Work_For from the type ids instead
        head_t[:, 1] = [0.5, -0.5, -0.5]
        tail_t[:, 1] = [-0.5, 0.5, -0.5]
    return w, head_t, tail_t


def _io(name: str, elem: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def stage1_model(outputs: tuple[str, ...], emissions_width: int | None = None) -> onnx.ModelProto:
    e_table, h_table = _tables()
    if emissions_width is not None:
        e_table = np.zeros((len(VOCAB), emissions_width), dtype=np.float32)
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "axis_last"], ["mask3"]),
        helper.make_node("Gather", ["E", "input_ids"], ["raw_em"]),
        helper.make_node("Mul", ["raw_em", "mask3"], ["emissions"]),
        helper.make_node("Gather", ["H", "input_ids"], ["hidden"]),
    ]
    outs = []
    if "emissions" in outputs:
        outs.append(_io("emissions", TensorProto.FLOAT, ["batch", "seq", e_table.shape[1]]))
    if "hidden" in outputs:
        outs.append(_io("hidden", TensorProto.FLOAT, ["batch", "seq", 4]))
    ins = [_io("input_ids", TensorProto.INT64, ["batch", "seq"]), _io("attention_mask", TensorProto.INT64, ["batch", "seq"])]
    inits = {"E": e_table, "H": h_table, "axis_last": np.array([-1], dtype=np.int64)}
    return _model(nodes, ins, outs, inits)


def stage2_model(typed: bool) -> onnx.ModelProto:
    w, head_t, tail_t = _relation_weights(typed)
    nodes = [helper.make_node("Gather", ["hidden", "pair_index"], ["ph"], axis=0)]  # (P, T, H)
    for side in ("head", "tail"):
        nodes += [
            helper.make_node("Unsqueeze", [f"{side}_mask", "axis_last"], [f"{side}_m3"]),
            helper.make_node("Mul", ["ph", f"{side}_m3"], [f"{side}_x"]),
            helper.make_node("ReduceSum", [f"{side}_x", "axis1"], [f"{side}_sum"], keepdims=0),
            helper.make_node("ReduceSum", [f"{side}_mask", "axis1"], [f"{side}_n"], keepdims=1),
            helper.make_node("Div", [f"{side}_sum", f"{side}_n"], [f"{side}_pool"]),
        ]
    nodes += [
        helper.make_node("Concat", ["head_pool", "tail_pool"], ["pair"], axis=1),
        helper.make_node("MatMul", ["pair", "W"], ["logits" if not typed else "base"]),
    ]
    ins = [
        _io("hidden", TensorProto.FLOAT, ["batch", "seq", 4]),
        _io("pair_index", TensorProto.INT64, ["pairs"]),
        _io("head_mask", TensorProto.FLOAT, ["pairs", "seq"]),
        _io("tail_mask", TensorProto.FLOAT, ["pairs", "seq"]),
    ]
    inits = {"W": w, "axis_last": np.array([-1], dtype=np.int64), "axis1": np.array([1], dtype=np.int64)}
    if typed:
        nodes += [
            helper.make_node("Gather", ["HT", "head_type"], ["ht"], axis=0),
            helper.make_node("Gather", ["TT", "tail_type"], ["tt"], axis=0),
            helper.make_node("Add", ["base", "ht"], ["b2"]),
            helper.make_node("Add", ["b2", "tt"], ["logits"]),
        ]
        ins += [_io("head_type", TensorProto.INT64, ["pairs"]), _io("tail_type", TensorProto.INT64, ["pairs"])]
        inits.update(HT=head_t, TT=tail_t)
    outs = [_io("logits", TensorProto.FLOAT, ["pairs", len(RELATIONS)])]
    return _model(nodes, ins, outs, inits)


def _spec(model: onnx.ModelProto, file: str) -> dict:
    names = {TensorProto.INT64: "int64", TensorProto.FLOAT: "float32"}

    def one(v):
        dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        return {"name": v.name, "dtype": names[v.type.tensor_type.elem_type], "shape": dims}

    return {"file": file, "inputs": [one(v) for v in model.graph.input], "outputs": [one(v) for v in model.graph.output]}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(folder: Path, manifest: dict) -> None:
    """(Re)hash every file but manifest.json and write the manifest."""
    manifest["files"] = {p.name: sha256(p) for p in sorted(folder.iterdir()) if p.name != "manifest.json"}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def make_bundle(
    folder: str | Path,
    task: str = "ner",
    kind: str = "word",
    max_length: int = 16,
    decoding: str = "softmax",
    typed: bool = False,
    crf_forbid_o_to_i: bool = False,
) -> Path:
    """Write a tiny bundle to ``folder`` (created) and return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    make_tokenizer(kind).save(str(folder / "tokenizer.json"))
    outputs = {"ner": ("emissions",), "re": ("hidden",), "joint": ("emissions", "hidden")}[task]
    s1 = stage1_model(outputs)
    onnx.save(s1, str(folder / "ner.onnx"))
    graphs = {"stage1": _spec(s1, "ner.onnx")}
    manifest: dict = {
        "format": "nere-bundle",
        "format_version": 1,
        "task": task,
        "model": "test-lookup",
        "precision": "fp32",
        "tokenizer": {"file": "tokenizer.json", "kind": kind, "cls_token": "[CLS]", "sep_token": "[SEP]",
                      "pad_token": "[PAD]", "max_length": max_length},
        "ner": None,
        "re": None,
    }
    if task in ("ner", "joint"):
        manifest["ner"] = {"tag_scheme": "BIO", "entity_labels": ENTITY_LABELS, "tags": TAGSET.tags,
                           "decoding": decoding, "crf": "crf.npz" if decoding == "crf" else None}
        if decoding == "crf":
            k = len(TAGSET.tags)
            trans = np.zeros((k, k), dtype=np.float32)
            start = np.zeros(k, dtype=np.float32)
            if crf_forbid_o_to_i:  # an I tag may only follow B/I of its own label
                for j, t in enumerate(TAGSET.tags):
                    if t.startswith("I-"):
                        start[j] = -100.0
                        trans[:, j] = -100.0
                        trans[TAGSET.tags.index("B-" + t[2:]), j] = 0.0
                        trans[j, j] = 0.0
            np.savez(folder / "crf.npz", transitions=trans, start=start, end=np.zeros(k, dtype=np.float32))
    if task in ("re", "joint"):
        manifest["re"] = {"relation_labels": RELATIONS, "negative_label": "no_relation",
                          "entity_labels": ENTITY_LABELS,
                          "type_pairs": [["Per", "Org"], ["Per", "Loc"], ["Org", "Loc"], ["Org", "Per"]]}
        s2 = stage2_model(typed)
        onnx.save(s2, str(folder / "re.onnx"))
        graphs["stage2"] = _spec(s2, "re.onnx")
    manifest["graphs"] = graphs
    manifest["metrics"] = {"test": {}}
    manifest["made_by"] = {"command": "tests/fixtures_bundles.py", "versions": {}, "created": "2020-01-01T00:00:00Z"}
    write_manifest(folder, manifest)
    return folder


def edit_manifest(folder: Path, **changes) -> None:
    """Change top-level manifest keys without rehashing (for tamper tests)."""
    path = Path(folder) / "manifest.json"
    m = json.loads(path.read_text())
    m.update(changes)
    path.write_text(json.dumps(m))


def scored_examples():
    """Gold-annotated sentences for scoring the lookup bundles: the joint bundle finds every
    entity and 3 of the 4 gold triples (it calls Bob -> London Located_In, gold says Live_In),
    so entity P/R/F1 are 1.0 and triple P/R/F1 0.75."""
    from nere.engine.core.types import Entity, Example, Relation

    a = "Alice Smith works for Acme Corp in Paris ."
    b = "Bob lives in London ."
    return [
        Example(a, [Entity(0, 11, "Per"), Entity(22, 31, "Org"), Entity(35, 40, "Loc")],
                [Relation(0, 1, "Work_For"), Relation(0, 2, "Located_In"), Relation(1, 2, "Located_In")]),
        Example(b, [Entity(0, 3, "Per"), Entity(13, 19, "Loc")], [Relation(0, 1, "Live_In")]),
    ]
