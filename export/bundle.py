"""Write a bundle folder (docs/bundle-format.md) from a loaded checkpoint.

The folder is assembled under a temporary name next to ``out`` and renamed when it is
complete, so a crash never leaves a half-written bundle that looks valid. Graph IO in the
manifest is read back from the saved ONNX files; every file but manifest.json (and the
model card, README.md, written after verification) is hashed.
"""
from __future__ import annotations

import json
import shutil
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nere.engine.manifest import (
    CRF,
    FORMAT,
    FORMAT_VERSION,
    NEGATIVE_LABEL,
    PRECISIONS,
    STAGES,
    TASKS,
    TOKENIZER,
    Manifest,
    feature_input_names,
    hash_files,
    package_versions,
)
from nere.export.lstm_graph import fold_lstm_reversals_file
from nere.export.onnx_export import dummy_feeds, export_graph, graph_io, torch_outputs
from nere.export.variants import DEFAULT_INT8_POLICY, make_variant

# what made a bundle, recorded in made_by.versions (for reproducing it)
MADE_BY_PACKAGES = ("nere", "torch", "transformers", "onnx", "onnxruntime", "tokenizers", "numpy")


def tokenizer_section(config: dict[str, Any]) -> dict[str, Any]:
    f = config["featurizer"]
    return {"file": TOKENIZER, "kind": f.get("kind", "wordpiece"), "cls_token": f.get("cls_token"),
            "sep_token": f.get("sep_token"), "pad_token": f.get("pad_token") or "[PAD]",
            "max_length": int(f["max_length"])}


def ner_section(model: Any) -> dict[str, Any] | None:
    """Tag scheme, labels and decoding of a model with an NER head (``tagset``), else None."""
    tagset = getattr(model, "tagset", None)
    if tagset is None:
        return None
    crf = model.crf_arrays() if hasattr(model, "crf_arrays") else None
    return {"tag_scheme": tagset.scheme, "entity_labels": list(tagset.labels), "tags": list(tagset.tags),
            "decoding": "crf" if crf is not None else "softmax", "crf": CRF if crf is not None else None}


def re_section(config: dict[str, Any]) -> dict[str, Any] | None:
    """Relation labels (negative first), entity type ids and type pairs of an RE head, else None."""
    rels = config.get("relation_labels")
    if not rels:
        return None
    rels = list(rels)
    neg = config.get("negative_label", NEGATIVE_LABEL)
    if rels[0] != neg:
        raise ValueError(f"relation_labels must start with the negative label {neg!r}, got {rels[:3]}")
    types = config.get("type_labels") or config.get("re_entity_labels") or config.get("entity_labels") or []
    pairs = config.get("type_pairs")
    return {"relation_labels": rels, "negative_label": neg, "entity_labels": list(types),
            "type_pairs": [list(p) for p in pairs] if pairs else None}


def write_feature_data(model: Any, config: dict[str, Any], dest: Path, source: str | Path | None = None
                       ) -> dict[str, Any] | None:
    """The manifest's ``features`` section of a model with extra per-token inputs (None
    without), its data files written into ``dest``: copied from the checkpoint folder
    ``source`` when given (the very bytes training saved), else saved from the model."""
    section = config.get("features")
    if not section:
        return None
    files = [part["file"] for key in ("bigrams", "lexicon") if (part := section.get(key))]
    if source is not None:
        for name in files:
            if not (Path(source) / name).is_file():
                raise ValueError(f"checkpoint {source} lacks the feature data file {name} its config.json names")
            shutil.copyfile(Path(source) / name, dest / name)
    else:
        if files and not getattr(model, "input_features", None):
            raise ValueError(f"model config names feature data {files} but the model holds none")
        if files:
            model.input_features.save(dest)
    names = feature_input_names(section)
    graph_names = list(getattr(model, "feature_names", names))
    if graph_names != names:
        raise ValueError(f"model's extra inputs {graph_names} differ from what its features config asks for {names}")
    return json.loads(json.dumps(section))  # a plain JSON copy


def bundle_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


def check_graph_parity(spec: Any, path: Path) -> float:
    """Max abs difference between the saved graph and the module on the spec's dummy inputs."""
    import onnxruntime as ort

    feeds = dummy_feeds(spec)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    got = sess.run(names, {k: v for k, v in feeds.items() if k in {i.name for i in sess.get_inputs()}})
    want = dict(zip(spec.outputs, torch_outputs(spec, feeds)))
    diff = max(float(np.abs(np.asarray(g, dtype=np.float32) - want[n]).max()) for n, g in zip(names, got))
    if not diff <= spec.atol:
        raise RuntimeError(f"graph {path.name}: max abs difference {diff:.3g} vs PyTorch exceeds atol {spec.atol}")
    return diff


def write_bundle(
    model: Any,
    config: dict[str, Any],
    tokenizer_file: str | Path,
    out: str | Path,
    precision: str = "fp32",
    int8_policy: str = DEFAULT_INT8_POLICY,
    command: str = "",
    training: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    calibration: dict[str, list[dict[str, np.ndarray]]] | None = None,
    checkpoint: str | Path | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Export ``model`` to the bundle folder ``out``; returns (folder, manifest).
    ``training``: what the checkpoint's training recorded (``made_by.training``, for the card);
    ``calibration``: input batches per graph name, for the int8 policies that calibrate;
    ``checkpoint``: its folder, whose feature data files (bigrams, lexicon) are copied."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (use --overwrite to replace it)")
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    task = getattr(model, "task", "") or config.get("task", "")
    if task not in TASKS:
        raise ValueError(f"model task {task!r} is not one of {', '.join(TASKS)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        graphs, details, parity, rewrites = {}, {}, {}, {}
        specs = model.export_graphs()
        for spec in specs:
            if spec.name not in STAGES:
                raise ValueError(f"graph name {spec.name!r}: expected one of {', '.join(STAGES)}")
            final = tmp / f"{spec.name}.onnx"
            fp32 = final if precision == "fp32" else tmp / "fp32" / final.name
            say(f"exporting {spec.name} graph")
            export_graph(spec, fp32)
            folded = fold_lstm_reversals_file(fp32)  # a BiLSTM's backward pass as a reverse LSTM
            if folded:
                rewrites[spec.name] = {"lstm_reversals_folded": folded}
            parity[spec.name] = check_graph_parity(spec, fp32)  # of the graph as rewritten
            if precision != "fp32":
                say(f"making {precision} {spec.name} graph")
                details[spec.name] = make_variant(fp32, final, precision, int8_policy,
                                                  calibration=(calibration or {}).get(spec.name))
            graphs[STAGES[spec.name]] = {"file": final.name, **graph_io(final)}
        shutil.rmtree(tmp / "fp32", ignore_errors=True)
        tokenizer_note = write_tokenizer(tokenizer_file, tmp / TOKENIZER)
        if tokenizer_note:
            say(tokenizer_note)
        features = write_feature_data(model, config, tmp, checkpoint)
        ner = ner_section(model)
        if ner is not None and ner["decoding"] == "crf":
            np.savez(tmp / CRF, **model.crf_arrays())
        data: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "task": task,
            "model": getattr(model, "kind", "") or config.get("model", ""),
            "precision": precision,
            "tokenizer": tokenizer_section(config),
            "ner": ner if task in ("ner", "joint") else None,
            "re": re_section(config) if task in ("re", "joint") else None,
            "graphs": graphs,
            **({"features": features} if features else {}),
            "files": hash_files(tmp),
            "metrics": {},
            "made_by": {
                "command": command,
                "versions": package_versions(MADE_BY_PACKAGES, python=True),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "export_seconds": round(time.perf_counter() - started, 3),
                "bundle_bytes": bundle_bytes(tmp),
                "dummy_max_abs_diff_fp32": parity,
                **({"graph_rewrites": rewrites} if rewrites else {}),
                **({"variant": details} if details else {}),
                **({"tokenizer": tokenizer_note} if tokenizer_note else {}),
                **({"training": training} if training else {}),
            },
        }
        manifest = Manifest(data, str(out / "manifest.json"))
        manifest.write(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, manifest.data


def write_tokenizer(source: str | Path, dest: Path) -> str | None:
    """Copy the checkpoint's tokenizer into the bundle; a legacy character tokenizer is
    written in its faster equivalent form (same ids and offsets). Returns a note saying so."""
    from tokenizers import Tokenizer

    from nere.train.vocab import faster_equivalent

    faster = faster_equivalent(Tokenizer.from_file(str(source)))
    if faster is None:
        shutil.copyfile(source, dest)
        return None
    faster.save(str(dest))
    return "character tokenizer written as BPE without merges (same tokens and offsets as the checkpoint's WordLevel + one-character split, less CPU)"


def set_made_by(folder: str | Path, key: str, value: Any) -> dict[str, Any]:
    """Record how the bundle was made (e.g. how its int8 policy was chosen); not hashed."""
    m = Manifest.read(folder).with_made_by(key, value)
    m.write(folder)
    return m.data


def set_metrics(folder: str | Path, split: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """Record measured metrics of ``split`` in the manifest (not hashed: files stay valid)."""
    m = Manifest.read(folder).with_metrics(split, metrics)
    m.write(folder)
    return m.data
