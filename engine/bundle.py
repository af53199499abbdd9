"""Load an exported bundle (docs/bundle-format.md), verify it, open its ONNX sessions.

A bundle that does not match its manifest refuses to load with a one-line
:class:`BundleError` naming the file and the reason: a silently wrong model (a
truncated download, labels from another run) is worse than no model.

Provider selection lives here too because it is decided when a session is created:
``device="auto"`` asks for CUDA when onnxruntime lists it and reads back what the
session really uses (onnxruntime-gpu falls back to CPU without raising);
``device="cuda"`` refuses to run anywhere but on the GPU.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import onnxruntime as ort

from nere.engine.core.featurize import Featurizer
from nere.engine.core.tags import TagSet
from nere.engine.errors import BundleError, EngineError

FORMAT = "nere-bundle"
FORMAT_VERSION = 1
TASKS = ("ner", "re", "joint")
DEVICES = ("auto", "cpu", "cuda")
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"

# inputs the engine knows how to fill; a graph asking for anything else is refused
STAGE1_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
STAGE2_INPUTS = ("hidden", "pair_index", "head_mask", "tail_mask", "head_type", "tail_type")

ORT_TO_NUMPY = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(bool)": np.bool_,
}
_MANIFEST_TO_ORT = {
    "int64": "tensor(int64)",
    "int32": "tensor(int32)",
    "float32": "tensor(float)",
    "float16": "tensor(float16)",
    "float64": "tensor(double)",
    "bool": "tensor(bool)",
}


@dataclass
class Graph:
    """One ONNX session plus what its graph declares (the truth for feeding it)."""

    file: str
    session: ort.InferenceSession
    inputs: dict[str, type]  # name -> numpy dtype
    outputs: dict[str, list]  # name -> shape (ints for static axes, names for dynamic)
    provider: str
    io_binding: bool = False  # on CUDA: inputs bound once, stage-1 hidden kept on the GPU


@dataclass
class NerSpec:
    tagset: TagSet
    decoding: str  # "crf" | "softmax"
    crf: dict[str, np.ndarray] | None


@dataclass
class ReSpec:
    relation_labels: list[str]
    negative_label: str
    entity_labels: list[str]  # index = type id fed to stage 2
    type_pairs: set[tuple[str, str]] | None  # None: every pair of typed entities

    @property
    def type_ids(self) -> dict[str, int]:
        return {lab: i for i, lab in enumerate(self.entity_labels)}


@dataclass
class Bundle:
    """A verified bundle with open sessions. ``sha256`` hashes manifest.json, which itself
    lists every file's hash, so it identifies the whole bundle."""

    path: Path
    manifest: dict[str, Any]
    task: str
    sha256: str
    files: dict[str, str]
    featurizer: Featurizer
    ner: NerSpec | None
    re: ReSpec | None
    stage1: Graph
    stage2: Graph | None
    notes: list[str] = field(default_factory=list)

    @property
    def provider(self) -> str:
        return self.stage1.provider

    @property
    def tokenizer_sha256(self) -> str:
        """Hash of the tokenizer file: two bundles with the same one tokenize text alike."""
        return self.files[self.manifest["tokenizer"]["file"]]

    def describe(self) -> dict[str, Any]:
        """What a run summary records about this bundle."""
        return {
            "path": str(self.path),
            "task": self.task,
            "model": self.manifest.get("model"),
            "precision": self.manifest.get("precision"),
            "sha256": self.sha256,
            "files": dict(self.files),
        }


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _need(cond: bool, where: Path | str, why: str) -> None:
    if not cond:
        raise BundleError(f"bundle {where}: {why}")


def _section(m: dict, key: str, where: Path) -> dict | None:
    value = m.get(key)
    _need(value is None or isinstance(value, dict), where, f"manifest '{key}' must be an object or null")
    return value


def _str_list(value: Any, what: str, where: Path) -> list[str]:
    ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    _need(ok, where, f"manifest {what} must be a list of strings")
    return list(value)


def _safe_member(bundle: Path, name: str) -> Path:
    """A file named in the manifest, refused if it points outside the bundle folder."""
    p = PurePosixPath(name)
    _need(bool(name) and not p.is_absolute() and ".." not in p.parts, bundle, f"bad file name {name!r} in manifest")
    return bundle / p


def read_manifest(path: str | Path) -> tuple[dict[str, Any], str]:
    """Parse manifest.json and check format, version, task and every file's sha256.

    Returns (manifest, sha256 of manifest.json). Label and graph checks need the files
    themselves and happen in :func:`load_bundle`.
    """
    bundle = Path(path)
    _need(bundle.is_dir(), bundle, "not a folder")
    mpath = bundle / "manifest.json"
    _need(mpath.is_file(), mpath, "missing")
    raw = mpath.read_bytes()
    try:
        m = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"bundle {mpath}: not valid JSON ({err})") from None
    _need(isinstance(m, dict), mpath, "not a JSON object")
    _need(m.get("format") == FORMAT, mpath, f"format is {m.get('format')!r}, expected {FORMAT!r}")
    _need(
        m.get("format_version") == FORMAT_VERSION,
        mpath,
        f"format_version is {m.get('format_version')!r}; this engine reads version {FORMAT_VERSION}",
    )
    _need(m.get("task") in TASKS, mpath, f"task is {m.get('task')!r}, expected one of {', '.join(TASKS)}")
    files = m.get("files")
    _need(isinstance(files, dict) and bool(files), mpath, "'files' must map file names to sha256")
    for name, digest in files.items():
        fpath = _safe_member(bundle, name)
        _need(fpath.is_file(), fpath, "listed in manifest but missing")
        _need(isinstance(digest, str), mpath, f"sha256 of {name} is not a string")
        actual = sha256_file(fpath)
        _need(actual == digest.lower(), fpath, f"sha256 mismatch (manifest {digest[:12]}..., file {actual[:12]}...)")
    return m, hashlib.sha256(raw).hexdigest()


def _listed(m: dict, bundle: Path, name: Any, what: str) -> Path:
    _need(isinstance(name, str), bundle / "manifest.json", f"{what} file name missing")
    _need(name in m["files"], bundle / name, f"{what} file is not listed (with its sha256) in manifest 'files'")
    return _safe_member(bundle, name)


def _ner_spec(m: dict, bundle: Path) -> NerSpec | None:
    mpath = bundle / "manifest.json"
    ner = _section(m, "ner", bundle)
    if ner is None:
        _need(m["task"] == "re", mpath, f"task {m['task']} needs an 'ner' section")
        return None
    labels = _str_list(ner.get("entity_labels"), "ner.entity_labels", mpath)
    try:
        tagset = TagSet(str(ner.get("tag_scheme")), tuple(labels))
        expected = tagset.tags
    except ValueError as err:
        raise BundleError(f"bundle {mpath}: ner: {err}") from None
    tags = _str_list(ner.get("tags"), "ner.tags", mpath)
    _need(
        tags == expected,
        mpath,
        f"ner.tags do not match tag_scheme {tagset.scheme} over entity_labels (expected {expected[:6]}...)",
    )
    decoding = ner.get("decoding")
    _need(decoding in ("crf", "softmax"), mpath, f"ner.decoding is {decoding!r}, expected 'crf' or 'softmax'")
    crf = None
    if decoding == "crf":
        cpath = _listed(m, bundle, ner.get("crf"), "CRF")
        try:
            with np.load(cpath) as z:
                crf = {k: np.asarray(z[k], dtype=np.float32) for k in ("transitions", "start", "end")}
        except (KeyError, ValueError, OSError) as err:
            raise BundleError(f"bundle {cpath}: cannot read CRF arrays transitions/start/end ({err})") from None
        k = len(tags)
        shapes = {n: a.shape for n, a in crf.items()}
        _need(
            shapes == {"transitions": (k, k), "start": (k,), "end": (k,)},
            cpath,
            f"CRF shapes {shapes} do not fit {k} tags",
        )
    return NerSpec(tagset, decoding, crf)


def _re_spec(m: dict, bundle: Path) -> ReSpec | None:
    mpath = bundle / "manifest.json"
    re_ = _section(m, "re", bundle)
    if re_ is None:
        _need(m["task"] == "ner", mpath, f"task {m['task']} needs an 're' section")
        return None
    rels = _str_list(re_.get("relation_labels"), "re.relation_labels", mpath)
    neg = re_.get("negative_label")
    _need(bool(rels) and rels[0] == neg, mpath, f"re.relation_labels[0] must be the negative_label {neg!r}")
    _need(len(set(rels)) == len(rels), mpath, "re.relation_labels has duplicates")
    types = _str_list(re_.get("entity_labels"), "re.entity_labels", mpath)
    pairs_raw = re_.get("type_pairs")
    pairs = None
    if pairs_raw:
        ok = isinstance(pairs_raw, list) and all(
            isinstance(p, list) and len(p) == 2 and all(t in types for t in p) for p in pairs_raw
        )
        _need(ok, mpath, "re.type_pairs must be [head, tail] pairs of re.entity_labels")
        pairs = {(h, t) for h, t in pairs_raw}
    return ReSpec(rels, neg, types, pairs)


def _featurizer(m: dict, bundle: Path) -> Featurizer:
    mpath = bundle / "manifest.json"
    tok = _section(m, "tokenizer", bundle)
    _need(tok is not None, mpath, "missing 'tokenizer' section")
    tpath = _listed(m, bundle, tok.get("file"), "tokenizer")
    max_length = tok.get("max_length")
    _need(isinstance(max_length, int) and max_length > 0, mpath, "tokenizer.max_length must be a positive integer")
    try:
        return Featurizer.from_file(
            tpath,
            max_length=max_length,
            cls_token=tok.get("cls_token"),
            sep_token=tok.get("sep_token"),
            pad_token=tok.get("pad_token") or "[PAD]",
        )
    except Exception as err:  # tokenizers raises plain Exception on a bad file
        raise BundleError(f"bundle {tpath}: cannot load tokenizer ({str(err).splitlines()[0]})") from None


def select_providers(device: str) -> list:
    """Providers to ask for, in order. ``cuda`` without a CUDA build is an error here."""
    if device not in DEVICES:
        raise EngineError(f"device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return [CPU]
    if CUDA in ort.get_available_providers():
        return [CUDA, CPU]
    if device == "cuda":
        raise EngineError(
            f"device cuda: this onnxruntime {ort.__version__} has no CUDAExecutionProvider "
            f"(it has {', '.join(ort.get_available_providers())}); install onnxruntime-gpu or use --device cpu"
        )
    return [CPU]


RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"})  # ONNX ops of recurrent encoders


def session_options(threads: int | None, memory_patterns: bool = True) -> ort.SessionOptions:
    """Explicit threads (no oversubscription when several engines share a host);
    ``memory_patterns``: see :func:`memory_patterns_pay`."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only; the provider actually used is reported by us
    # onnxruntime's intra-op threads spin while waiting for work by default; the engine
    # always has other threads with work (reader, decoding), which the spinning starves.
    # Measured on 2 cores, 2 threads: +10% documents/s for the MSRA BiLSTM-CRF bundle,
    # no change for MiniLM BERT-CRF (docs/benchmarks.md).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.enable_mem_pattern = memory_patterns
    return so


def stage1_recurrent(manifest: dict[str, Any] | None) -> bool:
    """Whether a bundle's stage-1 graph is recurrent (``graphs.stage1.recurrent``, recorded
    by export from the graph's operators); the engine's defaults and session settings for
    the small recurrent encoders key on it."""
    stage1 = ((manifest or {}).get("graphs") or {}).get("stage1") or {}
    return stage1.get("recurrent") is True


def memory_patterns_pay(recurrent: bool, provider: str) -> bool:
    """Whether onnxruntime should plan a memory pattern per set of input shapes: on CPU,
    yes for a recurrent bundle (many small calls, whose allocations the plan saves: the
    English BiLSTM-CRF int8 ran up to 7% slower without), no for the others (BERT-style
    encoders): their plans for the varying batch shapes (rows x bucket width) only add
    memory (BERT-CRF int8 over 200 documents cut with small edge units: peak RSS 362 ->
    297 MB) and the joint and BERT-CRF bundles ran as fast or faster without
    (docs/benchmarks.md item 42). Nothing was measured on CUDA: it keeps onnxruntime's
    default (on)."""
    return recurrent or provider == CUDA


def open_graph(path: Path, spec: Any, device: str, threads: int | None, recurrent: bool = False) -> Graph:
    """Create a session and check it against the manifest's declaration of the graph;
    ``recurrent``: the bundle's stage 1 is (:func:`memory_patterns_pay`)."""
    providers = select_providers(device)
    options = session_options(threads, memory_patterns_pay(recurrent, providers[0]))
    try:
        sess = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types for bad models
        raise BundleError(f"bundle {path}: onnxruntime cannot load it ({str(err).splitlines()[0]})") from None
    used = sess.get_providers()[0]
    if device == "cuda" and used != CUDA:
        raise EngineError(
            f"device cuda: onnxruntime could not start CUDAExecutionProvider for {path.name} "
            "(see its log above: driver, CUDA or cuDNN); use --device cpu or auto"
        )
    inputs = {}
    for i in sess.get_inputs():
        _need(i.type in ORT_TO_NUMPY, path, f"input {i.name} has unsupported type {i.type}")
        inputs[i.name] = ORT_TO_NUMPY[i.type]
    outputs = {o.name: list(o.shape) for o in sess.get_outputs()}
    declared_in = {d.get("name"): d.get("dtype") for d in (spec.get("inputs") or []) if isinstance(d, dict)}
    declared_out = [d.get("name") for d in (spec.get("outputs") or []) if isinstance(d, dict)]
    graph_types = {i.name: i.type for i in sess.get_inputs()}
    _need(
        set(declared_in) == set(graph_types),
        path,
        f"graph inputs {sorted(graph_types)} differ from the manifest's {sorted(declared_in)}",
    )
    for name, dtype in declared_in.items():
        _need(
            _MANIFEST_TO_ORT.get(dtype) == graph_types[name],
            path,
            f"input {name} is {graph_types[name]} in the graph but {dtype!r} in the manifest",
        )
    missing = [n for n in declared_out if n not in outputs]
    _need(not missing, path, f"graph lacks outputs {missing} declared in the manifest")
    return Graph(path.name, sess, inputs, outputs, used, io_binding=used == CUDA)


def _static_dim(shape: list, axis: int) -> int | None:
    """The size of an axis when the graph fixes it, else None (dynamic or unknown)."""
    d = shape[axis] if shape else None
    return d if isinstance(d, int) and d > 0 else None


def load_bundle(path: str | Path, device: str = "auto", threads: int | None = None) -> Bundle:
    """Verify a bundle completely and open its sessions; raises BundleError/EngineError."""
    bundle = Path(path)
    m, digest = read_manifest(bundle)
    mpath = bundle / "manifest.json"
    ner = _ner_spec(m, bundle)
    re_ = _re_spec(m, bundle)
    featurizer = _featurizer(m, bundle)
    graphs = _section(m, "graphs", bundle) or {}
    s1 = graphs.get("stage1")
    _need(isinstance(s1, dict), mpath, "missing graphs.stage1")
    recurrent = stage1_recurrent(m)
    stage1 = open_graph(_listed(m, bundle, s1.get("file"), "stage1 graph"), s1, device, threads, recurrent)
    unknown = [n for n in stage1.inputs if n not in STAGE1_INPUTS]
    _need(not unknown, bundle / stage1.file, f"stage 1 has inputs the engine cannot fill: {unknown}")
    _need("input_ids" in stage1.inputs, bundle / stage1.file, "stage 1 has no input_ids input")
    notes: list[str] = []
    if ner is not None:
        _need("emissions" in stage1.outputs, bundle / stage1.file, "stage 1 has no 'emissions' output")
        width = _static_dim(stage1.outputs["emissions"], -1)
        _need(
            width is None or width == len(ner.tagset.tags),
            bundle / stage1.file,
            f"emissions width {width} != {len(ner.tagset.tags)} tags in the manifest",
        )
    stage2 = None
    if re_ is not None:
        _need("hidden" in stage1.outputs, bundle / stage1.file, "stage 1 has no 'hidden' output for stage 2")
        s2 = graphs.get("stage2")
        _need(isinstance(s2, dict), mpath, f"task {m['task']} needs graphs.stage2")
        stage2 = open_graph(_listed(m, bundle, s2.get("file"), "stage2 graph"), s2, device, threads, recurrent)
        unknown = [n for n in stage2.inputs if n not in STAGE2_INPUTS]
        _need(not unknown, bundle / stage2.file, f"stage 2 has inputs the engine cannot fill: {unknown}")
        _need("hidden" in stage2.inputs, bundle / stage2.file, "stage 2 has no 'hidden' input")
        _need(bool(stage2.outputs), bundle / stage2.file, "stage 2 has no output")
        logits = stage2.outputs.get("logits", next(iter(stage2.outputs.values())))
        width = _static_dim(logits, -1)
        _need(
            width is None or width == len(re_.relation_labels),
            bundle / stage2.file,
            f"logits width {width} != {len(re_.relation_labels)} relation labels in the manifest",
        )
        if ner is not None:
            missing = [lab for lab in ner.tagset.labels if lab not in re_.entity_labels]
            _need(not missing, mpath, f"ner.entity_labels {missing} are not in re.entity_labels")
    if stage1.provider != CUDA and CUDA in select_providers(device):
        notes.append("CUDAExecutionProvider is listed but failed to load; running on CPU")
    return Bundle(bundle, m, m["task"], digest, dict(m["files"]), featurizer, ner, re_, stage1, stage2, notes)
