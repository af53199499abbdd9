"""The bundle contract (docs/bundle-format.md): names, constants and ``manifest.json``.

One module owns the format: ``nere export`` writes a manifest through :class:`Manifest`
and the engine reads it through the same class, so writer and reader cannot disagree
about what a valid bundle is. Structure and labels are checked here; what needs the
model files themselves (CRF shapes, the graphs' real inputs) is checked by
:func:`nere.engine.bundle.load_bundle`.
"""
from __future__ import annotations

import copy
import hashlib
import json
import platform
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from nere.engine.core.tags import TagSet
from nere.engine.core.types import NO_RELATION
from nere.engine.errors import BundleError

FORMAT = "nere-bundle"
FORMAT_VERSION = 1
TASKS = ("ner", "re", "joint")
PRECISIONS = ("fp32", "fp16", "int8")
TOKENIZER_KINDS = ("wordpiece", "word", "char")
DECODINGS = ("crf", "softmax")
DTYPES = ("int64", "int32", "float32", "float16", "float64", "bool")
NEGATIVE_LABEL = NO_RELATION  # re.relation_labels[0] of the bundles export writes

# file names inside a bundle folder
MANIFEST = "manifest.json"
CARD = "README.md"  # the model card: not hashed, so editing it never breaks loading
TOKENIZER = "tokenizer.json"
CRF = "crf.npz"
UNHASHED = (MANIFEST, CARD)

# model graph name (GraphSpec.name) -> manifest graphs key; the file is "<name>.onnx"
STAGES = {"ner": "stage1", "re": "stage2"}
# inputs the engine knows how to fill; a graph asking for anything else is refused
STAGE1_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
STAGE2_INPUTS = ("hidden", "pair_index", "head_mask", "tail_mask", "head_type", "tail_type")
# extra per-token stage-1 inputs (nere.engine.core.features), each allowed only when the
# manifest's ``features`` section asks for the feature that computes it
FEATURE_INPUTS = {"case": ("case_ids",), "bigrams": ("bigram_ids",), "lexicon": ("lexicon_ids", "lexicon_weights")}

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_files(folder: Path) -> dict[str, str]:
    """sha256 of every file of a bundle folder but the unhashed ones (manifest, card)."""
    return {p.name: sha256_file(p) for p in sorted(Path(folder).iterdir()) if p.is_file() and p.name not in UNHASHED}


def package_versions(packages: Iterable[str], python: bool = False) -> dict[str, str]:
    """Installed versions of ``packages`` (those not installed are left out)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()} if python else {}
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


def read_manifest_json(folder: str | Path) -> dict[str, Any] | None:
    """A bundle's manifest as plain JSON, unchecked (for defaults chosen before loading);
    None if unreadable: :meth:`Manifest.read` then reports what is wrong."""
    try:
        m = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) else None


def safe_member(folder: Path, name: str) -> Path:
    """A file named in the manifest, refused if it points outside the bundle folder."""
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts:
        raise BundleError(f"bundle {folder}: bad file name {name!r} in manifest")
    return folder / p


@dataclass(frozen=True)
class Manifest:
    """A validated ``manifest.json``. ``data`` is the JSON object; ``where`` names it in
    errors; ``sha256`` hashes the bytes it was read from (None when built in memory): it
    identifies the whole bundle, since the manifest lists every file's hash."""

    data: dict[str, Any]
    where: str = MANIFEST
    sha256: str | None = None

    def __post_init__(self) -> None:
        _Checker(self.where).check(self.data)

    # ------------------------------------------------------------------ reading
    @classmethod
    def parse(cls, raw: bytes | str, where: str | Path = MANIFEST) -> "Manifest":
        raw_bytes = raw.encode() if isinstance(raw, str) else raw
        try:
            data = json.loads(raw_bytes)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise BundleError(f"bundle {where}: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise BundleError(f"bundle {where}: not a JSON object")
        return cls(data, str(where), hashlib.sha256(raw_bytes).hexdigest())

    @classmethod
    def read(cls, folder: str | Path) -> "Manifest":
        """Parse and validate ``folder/manifest.json`` (file hashes: :meth:`verify_files`)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise BundleError(f"bundle {folder}: not a folder")
        path = folder / MANIFEST
        if not path.is_file():
            raise BundleError(f"bundle {path}: missing")
        return cls.parse(path.read_bytes(), path)

    def verify_files(self, folder: str | Path) -> None:
        """Every listed file exists in ``folder`` with its recorded sha256."""
        folder = Path(folder)
        for name, digest in self.files.items():
            path = safe_member(folder, name)
            if not path.is_file():
                raise BundleError(f"bundle {path}: listed in manifest but missing")
            actual = sha256_file(path)
            if actual != digest:
                raise BundleError(f"bundle {path}: sha256 mismatch (manifest {digest[:12]}..., file {actual[:12]}...)")

    # ------------------------------------------------------------------ writing
    def write(self, folder: str | Path) -> None:
        """Write manifest.json (temp name + rename: a reader never sees half a manifest)."""
        folder = Path(folder)
        tmp = folder / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(self.data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(folder / MANIFEST)

    def with_metrics(self, split: str, metrics: dict[str, Any]) -> "Manifest":
        """A copy with ``metrics[split]`` set (metrics are not hashed: files stay valid)."""
        data = copy.deepcopy(self.data)
        data.setdefault("metrics", {})[split] = metrics
        return Manifest(data, self.where)

    def with_evaluation(self, record: dict[str, Any]) -> "Manifest":
        """A copy with one more ``nere evaluate --record`` result (not hashed); it replaces an
        earlier record of the same dataset, split and RE bundle."""
        data = copy.deepcopy(self.data)
        key = (record.get("dataset"), record.get("split"), record.get("re_model"))
        kept = [r for r in data.get("evaluations") or [] if (r.get("dataset"), r.get("split"), r.get("re_model")) != key]
        data["evaluations"] = kept + [record]
        return Manifest(data, self.where)

    @property
    def evaluations(self) -> list[dict[str, Any]]:
        """Engine scores recorded by ``nere evaluate BUNDLE --record`` on other datasets or forms."""
        return self.data.get("evaluations") or []

    def with_made_by(self, key: str, value: Any) -> "Manifest":
        """A copy recording one more fact about how the bundle was made."""
        data = copy.deepcopy(self.data)
        data["made_by"][key] = value
        return Manifest(data, self.where)

    # ------------------------------------------------------------------ fields
    @property
    def task(self) -> str:
        return self.data["task"]

    @property
    def model(self) -> str:
        return self.data["model"]

    @property
    def precision(self) -> str:
        return self.data["precision"]

    @property
    def tokenizer(self) -> dict[str, Any]:
        return self.data["tokenizer"]

    @property
    def files(self) -> dict[str, str]:
        """File name -> sha256 of every hashed file."""
        return self.data["files"]

    @property
    def ner(self) -> dict[str, Any] | None:
        return self.data.get("ner")

    @property
    def re(self) -> dict[str, Any] | None:
        return self.data.get("re")

    @property
    def graphs(self) -> dict[str, Any]:
        return self.data["graphs"]

    @property
    def features(self) -> dict[str, Any] | None:
        """The extra stage-1 inputs and their data files (None: the graph reads ids and mask only)."""
        return self.data.get("features") or None

    @property
    def feature_inputs(self) -> list[str]:
        """Names of the extra stage-1 inputs the ``features`` section asks for."""
        return feature_input_names(self.features)

    @property
    def metrics(self) -> dict[str, Any]:
        """Split -> what ``--verify`` measured (not hashed)."""
        return self.data.get("metrics") or {}

    @property
    def made_by(self) -> dict[str, Any]:
        return self.data["made_by"]

    def headline(self, split: str = "test") -> dict[str, Any] | None:
        """The figure the bundle is sold on, as ``--verify`` measured it on ``split``."""
        return (self.metrics.get(split) or {}).get("headline")

    def int8_policy(self) -> str | None:
        """The int8 policy the graphs were quantized with (None unless int8)."""
        policies = {v.get("policy") for v in (self.made_by.get("variant") or {}).values()}
        policies.discard(None)
        return policies.pop() if len(policies) == 1 else None


def feature_input_names(section: dict[str, Any] | None) -> list[str]:
    """Extra stage-1 input names a ``features`` section asks for, in graph-input order."""
    if not section:
        return []
    return [n for key, names in FEATURE_INPUTS.items() if section.get(key) for n in names]


class _Checker:
    """The format's rules, first failure raised as a one-line BundleError."""

    def __init__(self, where: str) -> None:
        self.where = where

    def need(self, cond: bool, why: str) -> None:
        if not cond:
            raise BundleError(f"bundle {self.where}: {why}")

    def str_list(self, value: Any, what: str) -> list[str]:
        self.need(isinstance(value, list) and all(isinstance(v, str) for v in value), f"{what} must be a list of strings")
        return value

    def section(self, m: dict, key: str) -> dict | None:
        value = m.get(key)
        self.need(value is None or isinstance(value, dict), f"manifest '{key}' must be an object or null")
        return value

    def listed(self, files: dict, name: Any, what: str) -> None:
        self.need(isinstance(name, str), f"{what} file name missing")
        self.need(name in files, f"{what} file is not listed (with its sha256) in manifest 'files': {name!r}")

    def check(self, m: Any) -> None:
        need = self.need
        need(isinstance(m, dict), "not a JSON object")
        need(m.get("format") == FORMAT, f"format is {m.get('format')!r}, expected {FORMAT!r}")
        need(m.get("format_version") == FORMAT_VERSION,
             f"format_version is {m.get('format_version')!r}; this engine reads version {FORMAT_VERSION}")
        task = m.get("task")
        need(task in TASKS, f"task is {task!r}, expected one of {', '.join(TASKS)}")
        need(isinstance(m.get("model"), str) and bool(m["model"]), "model must be a non-empty string")
        need(m.get("precision") in PRECISIONS, f"precision is {m.get('precision')!r}, expected one of {', '.join(PRECISIONS)}")
        files = m.get("files")
        need(isinstance(files, dict) and bool(files), "'files' must map file names to sha256")
        for name, digest in files.items():
            safe_member(Path(self.where).parent, name)
            need(isinstance(digest, str) and bool(_SHA256.match(digest)), f"sha256 of {name} is not a lower-case hex digest")
        self.tokenizer(m, files)
        ner = self.ner(m, files, task)
        re_ = self.re(m, task)
        if ner is not None and re_ is not None:
            missing = [lab for lab in ner["entity_labels"] if lab not in re_["entity_labels"]]
            need(not missing, f"ner.entity_labels {missing} are not in re.entity_labels")
        extra = self.features(m, files)
        self.graphs(m, files, ner is not None, re_ is not None, extra)
        need(isinstance(m.get("metrics", {}), dict), "metrics must be an object")
        evals = m.get("evaluations", [])
        need(isinstance(evals, list) and all(isinstance(r, dict) for r in evals), "evaluations must be a list of objects")
        mb = m.get("made_by")
        need(isinstance(mb, dict), "made_by must be an object")
        need(isinstance(mb.get("command"), str), "made_by.command must be a string")
        need(isinstance(mb.get("versions"), dict), "made_by.versions must be an object")
        need(isinstance(mb.get("created"), str), "made_by.created must be an ISO time string")

    def tokenizer(self, m: dict, files: dict) -> None:
        tok = self.section(m, "tokenizer")
        self.need(tok is not None, "missing 'tokenizer' section")
        self.listed(files, tok.get("file"), "tokenizer")
        self.need(tok.get("kind") in TOKENIZER_KINDS, f"tokenizer.kind is {tok.get('kind')!r}, expected one of {', '.join(TOKENIZER_KINDS)}")
        max_length = tok.get("max_length")
        self.need(isinstance(max_length, int) and max_length > 0, "tokenizer.max_length must be a positive integer")
        for key in ("cls_token", "sep_token", "pad_token"):
            self.need(tok.get(key) is None or isinstance(tok[key], str), f"tokenizer.{key} must be a string or null")

    def ner(self, m: dict, files: dict, task: str) -> dict | None:
        ner = self.section(m, "ner")
        if ner is None:
            self.need(task == "re", f"task {task} needs an 'ner' section")
            return None
        self.need(task != "re", "task re must have 'ner': null")
        labels = self.str_list(ner.get("entity_labels"), "ner.entity_labels")
        try:
            expected = TagSet(str(ner.get("tag_scheme")), tuple(labels)).tags
        except ValueError as err:
            raise BundleError(f"bundle {self.where}: ner: {err}") from None
        tags = self.str_list(ner.get("tags"), "ner.tags")
        self.need(tags == expected,
                  f"ner.tags do not match tag_scheme {ner.get('tag_scheme')} over entity_labels (expected {expected[:6]}...)")
        decoding = ner.get("decoding")
        self.need(decoding in DECODINGS, f"ner.decoding is {decoding!r}, expected 'crf' or 'softmax'")
        if decoding == "crf":
            self.listed(files, ner.get("crf"), "CRF")
        return ner

    def re(self, m: dict, task: str) -> dict | None:
        re_ = self.section(m, "re")
        if re_ is None:
            self.need(task == "ner", f"task {task} needs an 're' section")
            return None
        self.need(task != "ner", "task ner must have 're': null")
        rels = self.str_list(re_.get("relation_labels"), "re.relation_labels")
        neg = re_.get("negative_label")
        self.need(len(rels) >= 2 and rels[0] == neg,
                  f"re.relation_labels[0] must be the negative_label {neg!r}, followed by the relations")
        self.need(len(set(rels)) == len(rels), "re.relation_labels has duplicates")
        types = self.str_list(re_.get("entity_labels"), "re.entity_labels")
        pairs = re_.get("type_pairs")
        ok = pairs is None or (isinstance(pairs, list) and all(
            isinstance(p, list) and len(p) == 2 and all(t in types for t in p) for p in pairs))
        self.need(ok, "re.type_pairs must be null or [head, tail] pairs of re.entity_labels")
        return re_

    def io(self, stage: str, kind: str, items: Any) -> list[str]:
        self.need(isinstance(items, list) and bool(items), f"graphs.{stage}.{kind} must be a non-empty list")
        for d in items:
            self.need(isinstance(d, dict) and isinstance(d.get("name"), str), f"graphs.{stage}.{kind} entries need a name")
            self.need(d.get("dtype") in DTYPES, f"graphs.{stage}.{kind} {d['name']}: dtype {d.get('dtype')!r} not in {DTYPES}")
            shape = d.get("shape")
            ok = isinstance(shape, list) and all(isinstance(x, str) or (isinstance(x, int) and x > 0) for x in shape)
            self.need(ok, f"graphs.{stage}.{kind} {d['name']}: shape must list axis names or sizes")
        return [d["name"] for d in items]

    def features(self, m: dict, files: dict) -> list[str]:
        """The optional ``features`` section (older bundles have none): which extra inputs,
        with each data file listed (and so hashed) in ``files``. Returns the input names."""
        feats = self.section(m, "features")
        if not feats:
            return []
        need = self.need
        need(isinstance(feats.get("case", False), bool), "features.case must be true or false")
        for key, what in (("bigrams", "bigram vocabulary"), ("lexicon", "lexicon")):
            part = feats.get(key)
            if part is None:
                continue
            need(isinstance(part, dict), f"features.{key} must be an object or null")
            self.listed(files, part.get("file"), f"features {what}")
            size = part.get("size")
            need(isinstance(size, int) and size > 0, f"features.{key}.size must be a positive integer")
        lex = feats.get("lexicon")
        if lex:
            k = lex.get("k")
            need(isinstance(k, int) and k > 0, "features.lexicon.k must be a positive integer")
        names = feature_input_names(feats)
        need(bool(names), "features asks for no extra input (use null)")
        return names

    def graphs(self, m: dict, files: dict, has_ner: bool, has_re: bool, extra: list[str] = ()) -> None:
        graphs = self.section(m, "graphs") or {}
        for stage, known in (("stage1", STAGE1_INPUTS + tuple(extra)), ("stage2", STAGE2_INPUTS)):
            if stage == "stage2" and not has_re:
                continue
            g = graphs.get(stage)
            self.need(isinstance(g, dict), f"missing graphs.{stage}" + ("" if stage == "stage1" else f" (task {m['task']})"))
            self.listed(files, g.get("file"), f"{stage} graph")
            ins = self.io(stage, "inputs", g.get("inputs"))
            outs = self.io(stage, "outputs", g.get("outputs"))
            self.need(isinstance(g.get("recurrent", False), bool), f"graphs.{stage}.recurrent must be true or false")
            unknown = [n for n in ins if n not in known]
            self.need(not unknown, f"graphs.{stage} has inputs the engine cannot fill: {unknown}")
            if stage == "stage1":
                self.need("input_ids" in ins, "graphs.stage1 needs an input_ids input")
                missing = [n for n in extra if n not in ins]
                self.need(not missing, f"features asks for inputs graphs.stage1 does not take: {missing}")
                self.need(not has_ner or "emissions" in outs, "graphs.stage1 needs an 'emissions' output")
                self.need(not has_re or "hidden" in outs, "graphs.stage1 needs a 'hidden' output for stage 2")
            else:
                self.need("hidden" in ins, "graphs.stage2 needs a 'hidden' input")
