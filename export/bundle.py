"""Write a bundle folder (docs/bundle-format.md) from a loaded checkpoint.

The folder is assembled under a temporary name next to ``out`` and renamed when it is
complete, so a crash never leaves a half-written bundle that looks valid. Graph IO in the
manifest is read back from the saved ONNX files; every file but manifest.json is hashed.
"""
from __future__ import annotations

import json
import platform
import re
import shutil
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nere.engine.bundle import FORMAT, FORMAT_VERSION, TASKS, sha256_file
from nere.engine.errors import BundleError
from nere.export.lstm_graph import fold_lstm_reversals_file
from nere.export.onnx_export import dummy_feeds, export_graph, graph_io, torch_outputs
from nere.export.variants import DEFAULT_INT8_POLICY, PRECISIONS, make_variant

MANIFEST, TOKENIZER, CRF = "manifest.json", "tokenizer.json", "crf.npz"
STAGES = {"ner": "stage1", "re": "stage2"}  # GraphSpec.name -> manifest graphs key
NEGATIVE = "no_relation"
_DTYPES = ("int64", "int32", "float32", "float16", "float64", "bool")


def versions() -> dict[str, str]:
    """Versions of what made the bundle (for reproducing it)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("nere", "torch", "transformers", "onnx", "onnxruntime", "tokenizers", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


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
    neg = config.get("negative_label", NEGATIVE)
    if rels[0] != neg:
        raise ValueError(f"relation_labels must start with the negative label {neg!r}, got {rels[:3]}")
    types = config.get("type_labels") or config.get("re_entity_labels") or config.get("entity_labels") or []
    pairs = config.get("type_pairs")
    return {"relation_labels": rels, "negative_label": neg, "entity_labels": list(types),
            "type_pairs": [list(p) for p in pairs] if pairs else None}


def hash_files(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}


def read_manifest_json(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / MANIFEST).read_text())


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> None:
    """Write manifest.json (temp name + rename: a reader never sees half a manifest)."""
    folder = Path(folder)
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(folder / MANIFEST)


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
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Export ``model`` to the bundle folder ``out``; returns (folder, manifest)."""
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
                details[spec.name] = make_variant(fp32, final, precision, int8_policy)
            graphs[STAGES[spec.name]] = {"file": final.name, **graph_io(final)}
        shutil.rmtree(tmp / "fp32", ignore_errors=True)
        tokenizer_note = write_tokenizer(tokenizer_file, tmp / TOKENIZER)
        if tokenizer_note:
            say(tokenizer_note)
        ner = ner_section(model)
        if ner is not None and ner["decoding"] == "crf":
            np.savez(tmp / CRF, **model.crf_arrays())
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "task": task,
            "model": getattr(model, "kind", "") or config.get("model", ""),
            "precision": precision,
            "tokenizer": tokenizer_section(config),
            "ner": ner if task in ("ner", "joint") else None,
            "re": re_section(config) if task in ("re", "joint") else None,
            "graphs": graphs,
            "files": hash_files(tmp),
            "metrics": {},
            "made_by": {
                "command": command,
                "versions": versions(),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "export_seconds": round(time.perf_counter() - started, 3),
                "bundle_bytes": bundle_bytes(tmp),
                "dummy_max_abs_diff_fp32": parity,
                **({"graph_rewrites": rewrites} if rewrites else {}),
                **({"variant": details} if details else {}),
                **({"tokenizer": tokenizer_note} if tokenizer_note else {}),
            },
        }
        validate_manifest(manifest)
        write_manifest(tmp, manifest)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, manifest


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
    m = read_manifest_json(folder)
    m["made_by"][key] = value
    validate_manifest(m)
    write_manifest(folder, m)
    return m


def set_metrics(folder: str | Path, split: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """Record measured metrics of ``split`` in the manifest (not hashed: files stay valid)."""
    m = read_manifest_json(folder)
    m.setdefault("metrics", {})[split] = metrics
    validate_manifest(m)
    write_manifest(folder, m)
    return m


# ---------------------------------------------------------------- schema validation

_SHA = re.compile(r"^[0-9a-f]{64}$")


def _need(cond: bool, why: str) -> None:
    if not cond:
        raise BundleError(f"manifest: {why}")


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _check_io(stage: str, kind: str, items: Any) -> list[str]:
    _need(isinstance(items, list) and bool(items), f"graphs.{stage}.{kind} must be a non-empty list")
    for d in items:
        _need(isinstance(d, dict) and isinstance(d.get("name"), str), f"graphs.{stage}.{kind} entries need a name")
        _need(d.get("dtype") in _DTYPES, f"graphs.{stage}.{kind} {d['name']}: dtype {d.get('dtype')!r} not in {_DTYPES}")
        shape = d.get("shape")
        ok = isinstance(shape, list) and all(isinstance(x, str) or (isinstance(x, int) and x > 0) for x in shape)
        _need(ok, f"graphs.{stage}.{kind} {d['name']}: shape must list axis names or sizes")
    return [d["name"] for d in items]


def validate_manifest(m: Any) -> None:
    """Check a manifest against docs/bundle-format.md (structure only; hashes are the engine's job).

    Raises BundleError naming the first bad field.
    """
    _need(isinstance(m, dict), "not a JSON object")
    _need(m.get("format") == FORMAT, f"format must be {FORMAT!r}")
    _need(m.get("format_version") == FORMAT_VERSION, f"format_version must be {FORMAT_VERSION}")
    task = m.get("task")
    _need(task in TASKS, f"task {task!r} not in {TASKS}")
    _need(isinstance(m.get("model"), str) and bool(m["model"]), "model must be a non-empty string")
    _need(m.get("precision") in PRECISIONS, f"precision {m.get('precision')!r} not in {PRECISIONS}")
    tok = m.get("tokenizer")
    _need(isinstance(tok, dict), "tokenizer must be an object")
    _need(isinstance(tok.get("file"), str), "tokenizer.file missing")
    _need(tok.get("kind") in ("wordpiece", "word", "char"), f"tokenizer.kind {tok.get('kind')!r} unknown")
    _need(isinstance(tok.get("max_length"), int) and tok["max_length"] > 0, "tokenizer.max_length must be a positive int")
    for key in ("cls_token", "sep_token"):
        _need(tok.get(key) is None or isinstance(tok[key], str), f"tokenizer.{key} must be a string or null")
    _need(isinstance(tok.get("pad_token"), str), "tokenizer.pad_token must be a string")
    files = m.get("files")
    _need(isinstance(files, dict) and bool(files), "files must map file names to sha256")
    for name, digest in files.items():
        _need(isinstance(digest, str) and bool(_SHA.match(digest)), f"files[{name!r}] is not a sha256 hex digest")
    _need(tok["file"] in files, f"tokenizer file {tok['file']!r} not listed in files")

    ner, re_ = m.get("ner"), m.get("re")
    _need((ner is not None) == (task in ("ner", "joint")), f"task {task}: ner section must be {'present' if task != 're' else 'null'}")
    _need((re_ is not None) == (task in ("re", "joint")), f"task {task}: re section must be {'present' if task != 'ner' else 'null'}")
    if ner is not None:
        _need(isinstance(ner, dict), "ner must be an object")
        _need(_is_str_list(ner.get("entity_labels")), "ner.entity_labels must be a list of strings")
        _need(_is_str_list(ner.get("tags")) and ner["tags"][:1] == ["O"], "ner.tags must be a list starting with 'O'")
        _need(isinstance(ner.get("tag_scheme"), str), "ner.tag_scheme missing")
        _need(ner.get("decoding") in ("crf", "softmax"), f"ner.decoding {ner.get('decoding')!r} not crf|softmax")
        if ner["decoding"] == "crf":
            _need(ner.get("crf") in files, "ner.crf must name a file listed in files")
    if re_ is not None:
        _need(isinstance(re_, dict), "re must be an object")
        rels = re_.get("relation_labels")
        _need(_is_str_list(rels) and len(rels) >= 2, "re.relation_labels must list the negative label and relations")
        _need(rels[0] == re_.get("negative_label"), "re.relation_labels[0] must be re.negative_label")
        _need(_is_str_list(re_.get("entity_labels")), "re.entity_labels must be a list of strings")
        pairs = re_.get("type_pairs")
        _need(pairs is None or (isinstance(pairs, list) and all(_is_str_list(p) and len(p) == 2 for p in pairs)),
              "re.type_pairs must be null or [head, tail] pairs")

    graphs = m.get("graphs")
    _need(isinstance(graphs, dict), "graphs must be an object")
    need_stages = ["stage1"] + (["stage2"] if task in ("re", "joint") else [])
    for stage in need_stages:
        g = graphs.get(stage)
        _need(isinstance(g, dict), f"graphs.{stage} missing")
        _need(g.get("file") in files, f"graphs.{stage}.file must name a file listed in files")
        ins = _check_io(stage, "inputs", g.get("inputs"))
        _need(isinstance(g.get("recurrent", False), bool), f"graphs.{stage}.recurrent must be true or false")
        outs = _check_io(stage, "outputs", g.get("outputs"))
        if stage == "stage1":
            _need("input_ids" in ins, "graphs.stage1 needs an input_ids input")
            if ner is not None:
                _need("emissions" in outs, "graphs.stage1 needs an emissions output")
            if re_ is not None:
                _need("hidden" in outs, "graphs.stage1 needs a hidden output")
        else:
            _need("hidden" in ins, "graphs.stage2 needs a hidden input")
    _need(isinstance(m.get("metrics"), dict), "metrics must be an object")
    mb = m.get("made_by")
    _need(isinstance(mb, dict), "made_by must be an object")
    _need(isinstance(mb.get("command"), str), "made_by.command must be a string")
    _need(isinstance(mb.get("versions"), dict), "made_by.versions must be an object")
    _need(isinstance(mb.get("created"), str), "made_by.created must be an ISO time string")
