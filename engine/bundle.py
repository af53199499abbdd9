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

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from nere.engine.core.features import BigramVocab, Lexicon, TokenFeatures
from nere.engine.core.featurize import Featurizer
from nere.engine.core.tags import TagSet
from nere.engine.errors import BundleError, EngineError
from nere.engine.manifest import STAGE1_INPUTS, STAGE2_INPUTS, Manifest, safe_member

DEVICES = ("auto", "cpu", "cuda")
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"

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
    features: TokenFeatures | None = None  # extra stage-1 inputs and their data (None: ids and mask only)

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


def _need(cond: bool, where: Path | str, why: str) -> None:
    if not cond:
        raise BundleError(f"bundle {where}: {why}")


def _ner_spec(m: Manifest, bundle: Path) -> NerSpec | None:
    ner = m.ner
    if ner is None:
        return None
    tagset = TagSet(ner["tag_scheme"], tuple(ner["entity_labels"]))
    crf = None
    if ner["decoding"] == "crf":
        cpath = safe_member(bundle, ner["crf"])
        try:
            with np.load(cpath) as z:
                crf = {k: np.asarray(z[k], dtype=np.float32) for k in ("transitions", "start", "end")}
        except (KeyError, ValueError, OSError) as err:
            raise BundleError(f"bundle {cpath}: cannot read CRF arrays transitions/start/end ({err})") from None
        k = len(tagset.tags)
        shapes = {n: a.shape for n, a in crf.items()}
        _need(
            shapes == {"transitions": (k, k), "start": (k,), "end": (k,)},
            cpath,
            f"CRF shapes {shapes} do not fit {k} tags",
        )
    return NerSpec(tagset, ner["decoding"], crf)


def _re_spec(m: Manifest) -> ReSpec | None:
    re_ = m.re
    if re_ is None:
        return None
    pairs = {(h, t) for h, t in re_["type_pairs"]} if re_.get("type_pairs") else None
    return ReSpec(list(re_["relation_labels"]), re_["negative_label"], list(re_["entity_labels"]), pairs)


def _featurizer(m: Manifest, bundle: Path) -> Featurizer:
    tok = m.tokenizer
    tpath = safe_member(bundle, tok["file"])
    try:
        return Featurizer.from_file(
            tpath,
            max_length=tok["max_length"],
            cls_token=tok.get("cls_token"),
            sep_token=tok.get("sep_token"),
            pad_token=tok.get("pad_token") or "[PAD]",
        )
    except Exception as err:  # tokenizers raises plain Exception on a bad file
        raise BundleError(f"bundle {tpath}: cannot load tokenizer ({str(err).splitlines()[0]})") from None


def _input_features(m: Manifest, bundle: Path) -> TokenFeatures | None:
    """The extra stage-1 inputs of the manifest's ``features`` section, their data read
    from the bundle's (already hash-checked) files; None for a bundle without any."""
    section = m.features
    if not section:
        return None
    parts: dict[str, Any] = {}
    for key, reader in (("bigrams", BigramVocab.load), ("lexicon", Lexicon.load)):
        spec = section.get(key)
        if not spec:
            continue
        path = safe_member(bundle, spec["file"])
        try:
            parts[key] = reader(path)
        except Exception as err:  # numpy raises many types on a file that is no .npz
            raise BundleError(f"bundle {path}: cannot read {key} data ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
        _need(len(parts[key]) == spec["size"], path,
              f"{key} data has {len(parts[key])} embedding rows, the manifest says {spec['size']}")
    lex = section.get("lexicon") or {}
    return TokenFeatures(case=bool(section.get("case")), bigrams=parts.get("bigrams"), lexicon=parts.get("lexicon"),
                         lexicon_k=int(lex.get("k", 3)))


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
    # always has other threads with work (reader, decoding), which the spinning starves
    # (docs/benchmarks.md).
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
    yes for a recurrent bundle (many small calls, whose allocations the plan saves), no
    for the others (BERT-style encoders), whose plans for the engine's varying batch shapes
    only add memory (docs/benchmarks.md). CUDA keeps onnxruntime's default (on)."""
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
    m = Manifest.read(bundle)
    m.verify_files(bundle)
    ner = _ner_spec(m, bundle)
    re_ = _re_spec(m)
    featurizer = _featurizer(m, bundle)
    s1 = m.graphs["stage1"]
    recurrent = stage1_recurrent(m.data)
    features = _input_features(m, bundle)
    stage1 = open_graph(safe_member(bundle, s1["file"]), s1, device, threads, recurrent)
    extra = features.input_names if features else []
    unknown = [n for n in stage1.inputs if n not in STAGE1_INPUTS and n not in extra]
    _need(not unknown, bundle / stage1.file, f"stage 1 has inputs the engine cannot fill: {unknown}")
    unfed = [n for n in extra if n not in stage1.inputs]
    _need(not unfed, bundle / stage1.file, f"manifest features {unfed} are not inputs of the graph")
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
        s2 = m.graphs["stage2"]
        stage2 = open_graph(safe_member(bundle, s2["file"]), s2, device, threads, recurrent)
        unknown = [n for n in stage2.inputs if n not in STAGE2_INPUTS]
        _need(not unknown, bundle / stage2.file, f"stage 2 has inputs the engine cannot fill: {unknown}")
        logits = stage2.outputs.get("logits", next(iter(stage2.outputs.values())))
        width = _static_dim(logits, -1)
        _need(
            width is None or width == len(re_.relation_labels),
            bundle / stage2.file,
            f"logits width {width} != {len(re_.relation_labels)} relation labels in the manifest",
        )
    if stage1.provider != CUDA and CUDA in select_providers(device):
        notes.append("CUDAExecutionProvider is listed but failed to load; running on CPU")
    return Bundle(bundle, m.data, m.task, m.sha256 or "", dict(m.files), featurizer, ner, re_, stage1, stage2, notes,
                  features)
