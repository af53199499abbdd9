"""Bundle loading: a bundle that does not match its manifest refuses to load, naming why."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fixtures_bundles import ENTITY_LABELS, RELATIONS, TAGSET, make_bundle, write_manifest
from nere.engine.bundle import CPU, load_bundle
from nere.engine.errors import BundleError, EngineError
from nere.engine.manifest import Manifest


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    return {
        "ner": make_bundle(root / "ner"),
        "joint": make_bundle(root / "joint", task="joint", decoding="crf", typed=True),
        "re": make_bundle(root / "re", task="re"),
    }


@pytest.fixture
def joint(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine["joint"], tmp_path / "b"))


def _edit(folder: Path, fn, rehash: bool = False) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    fn(m)
    if rehash:
        write_manifest(folder, m)
    else:
        (folder / "manifest.json").write_text(json.dumps(m))


def test_loads_every_task(pristine):
    for task, path in pristine.items():
        b = load_bundle(path, device="cpu", threads=1)
        assert b.task == task and b.provider == CPU
        assert b.stage1.session.get_providers()[0] == CPU
        assert len(b.sha256) == 64 and set(b.files) >= {"ner.onnx", "tokenizer.json"}
        assert (b.ner is None) == (task == "re") and (b.stage2 is None) == (task == "ner")
    j = load_bundle(pristine["joint"], device="cpu")
    assert j.ner.decoding == "crf" and j.ner.crf["transitions"].shape == (7, 7)
    assert set(j.stage2.inputs) == {"hidden", "pair_index", "head_mask", "tail_mask", "head_type", "tail_type"}
    assert j.re.type_ids == {lab: i for i, lab in enumerate(ENTITY_LABELS)}


def test_changed_byte_is_refused(joint):
    path = joint / "ner.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"ner\.onnx: sha256 mismatch"):
        load_bundle(joint, device="cpu")


def test_missing_file_is_refused(joint):
    (joint / "crf.npz").unlink()
    with pytest.raises(BundleError, match=r"crf\.npz: listed in manifest but missing"):
        load_bundle(joint, device="cpu")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.update(format_version=2), "format_version is 2"),
        (lambda m: m.update(format="other"), "format is 'other'"),
        (lambda m: m.update(task="ocr"), "task is 'ocr'"),
        (lambda m: m["ner"].update(tags=TAGSET.tags[:-1]), "ner.tags do not match"),
        (lambda m: m["ner"].update(tag_scheme="BIOES"), "ner.tags do not match"),
        (lambda m: m["ner"].update(decoding="beam"), "ner.decoding"),
        (lambda m: m["re"].update(relation_labels=RELATIONS[::-1]), "relation_labels\\[0\\] must be the negative"),
        (lambda m: m["re"].update(type_pairs=[["Per", "Animal"]]), "type_pairs"),
        (lambda m: m["re"].update(entity_labels=["Per", "Org"], type_pairs=None), "not in re.entity_labels"),
        (lambda m: m["files"].pop("tokenizer.json"), "tokenizer file is not listed"),
        (lambda m: m["files"].update({"../x": "0" * 64}), "bad file name"),
        (lambda m: m["graphs"]["stage1"]["inputs"].pop(), "differ from the manifest"),
        (lambda m: m["graphs"]["stage2"]["inputs"][1].update(dtype="int32"), "pair_index is tensor\\(int64\\)"),
        (lambda m: m.update(ner=None), "task joint needs an 'ner' section"),
        (lambda m: m["tokenizer"].update(cls_token="<s>"), "no token '<s>'"),
    ],
)
def test_manifest_mismatches_are_refused(joint, change, message):
    _edit(joint, change)
    with pytest.raises(BundleError, match=message):
        load_bundle(joint, device="cpu")


def test_label_count_must_match_graph_widths(joint):
    # consistent manifest, but one label more than the graphs were built for
    _edit(joint, lambda m: (m["ner"].update(entity_labels=ENTITY_LABELS + ["Misc"],
                                            tags=TAGSET.tags + ["B-Misc", "I-Misc"]),
                            m["re"].update(entity_labels=ENTITY_LABELS + ["Misc"])))
    k = 9
    np.savez(joint / "crf.npz", transitions=np.zeros((k, k)), start=np.zeros(k), end=np.zeros(k))
    _edit(joint, lambda m: None, rehash=True)
    with pytest.raises(BundleError, match="emissions width 7 != 9 tags"):
        load_bundle(joint, device="cpu")
    _edit(joint, lambda m: (m["ner"].update(entity_labels=ENTITY_LABELS, tags=TAGSET.tags),
                            m["re"].update(entity_labels=ENTITY_LABELS, relation_labels=RELATIONS + ["Kill"])))
    np.savez(joint / "crf.npz", transitions=np.zeros((7, 7)), start=np.zeros(7), end=np.zeros(7))
    _edit(joint, lambda m: None, rehash=True)
    with pytest.raises(BundleError, match="logits width 3 != 4 relation labels"):
        load_bundle(joint, device="cpu")


def test_crf_shape_and_bad_graph_are_refused(joint):
    np.savez(joint / "crf.npz", transitions=np.zeros((5, 5)), start=np.zeros(5), end=np.zeros(5))
    _edit(joint, lambda m: None, rehash=True)
    with pytest.raises(BundleError, match="crf.npz: CRF shapes"):
        load_bundle(joint, device="cpu")
    np.savez(joint / "crf.npz", transitions=np.zeros((7, 7)), start=np.zeros(7), end=np.zeros(7))
    (joint / "re.onnx").write_bytes(b"not a model")
    _edit(joint, lambda m: None, rehash=True)
    with pytest.raises(BundleError, match="re.onnx: onnxruntime cannot load it"):
        load_bundle(joint, device="cpu")


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not a folder"):
        load_bundle(tmp_path / "nothing")
    with pytest.raises(BundleError, match="manifest.json: missing"):
        Manifest.read(tmp_path)
    (tmp_path / "manifest.json").write_text("{oops")
    with pytest.raises(BundleError, match="not valid JSON"):
        Manifest.read(tmp_path)


def test_cuda_without_gpu_is_a_clear_error(pristine):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the no-GPU error cannot be provoked here")
    with pytest.raises(EngineError, match="device cuda: .*no CUDAExecutionProvider"):
        load_bundle(pristine["ner"], device="cuda")
    b = load_bundle(pristine["ner"], device="auto")  # auto falls back to the CPU, and says so
    assert b.provider == CPU
    with pytest.raises(EngineError, match="device 'tpu'"):
        load_bundle(pristine["ner"], device="tpu")


def test_session_options_threads_and_no_spinning():
    """Explicit intra-op threads, one inter-op thread, and idle threads that do not spin
    (spinning starved the engine's reader/decoding threads: docs/benchmarks.md)."""
    from nere.engine.bundle import session_options

    so = session_options(3)
    assert so.intra_op_num_threads == 3 and so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options(None).intra_op_num_threads >= 1


def test_memory_patterns_only_for_recurrent_graphs(pristine):
    """onnxruntime plans memory per input shape for recurrent stage-1 graphs only; for the
    others those plans only added memory over the engine's varying batch shapes."""
    from nere.engine.bundle import CUDA, memory_patterns_pay, session_options, stage1_recurrent

    assert memory_patterns_pay(True, CPU) and not memory_patterns_pay(False, CPU)
    assert memory_patterns_pay(False, CUDA)  # nothing measured there: onnxruntime's default
    assert stage1_recurrent({"graphs": {"stage1": {"recurrent": True}}})
    assert not stage1_recurrent({"graphs": {"stage1": {}}}) and not stage1_recurrent(None)
    assert session_options(1).enable_mem_pattern and not session_options(1, memory_patterns=False).enable_mem_pattern
    j = load_bundle(pristine["joint"], device="cpu")  # the test bundles are no LSTM
    assert not j.stage1.session.get_session_options().enable_mem_pattern
    assert not j.stage2.session.get_session_options().enable_mem_pattern
    shipped = load_bundle(Path(__file__).resolve().parents[1] / "artifacts" / "zh-msra-ner-bilstm-crf-int8", "cpu")
    assert shipped.stage1.session.get_session_options().enable_mem_pattern


def test_score_bundle_through_the_engine(pristine):
    """Entities and triples of the engine's tables against gold; the headline is triples
    F1 for a bundle with relations, entity F1 for an NER bundle."""
    from fixtures_bundles import scored_examples
    from nere.engine.score import score_bundle

    examples = scored_examples()
    gold = [[(e.start, e.end, e.label) for e in ex.entities] for ex in examples]
    joint = score_bundle(pristine["joint"], examples, gold, device="cpu", threads=1)
    assert joint["documents"] == 2
    assert joint["entities"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert joint["triples"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75}
    assert joint["headline"] == {"metric": "triples_f1", "value": 0.75, "through": "engine"}
    ner = score_bundle(pristine["ner"], examples, gold, device="cpu", threads=1)
    assert ner["triples"] is None and ner["headline"] == {"metric": "entity_f1", "value": 1.0, "through": "engine"}


def test_card_is_not_hashed(joint):
    """README.md (the model card) is not listed in 'files': editing it never breaks loading;
    an unlisted file is ignored, a listed one is checked."""
    from nere.engine.manifest import CARD, hash_files

    (joint / CARD).write_text("# card\n")
    assert CARD not in hash_files(joint)
    load_bundle(joint, device="cpu")
    (joint / CARD).write_text("# edited card\n")
    load_bundle(joint, device="cpu")


def test_manifest_round_trip_and_one_line_errors(joint, tmp_path):
    m = Manifest.read(joint)
    assert m.task == "joint" and m.sha256 and m.int8_policy() is None and m.headline() is None
    m2 = m.with_metrics("test", {"headline": {"metric": "triples_f1", "value": 0.5, "through": "engine"}})
    m2.write(joint)
    assert Manifest.read(joint).headline()["value"] == 0.5 and m.metrics == {"test": {}}  # copies, not edits
    load_bundle(joint, device="cpu")  # metrics are not hashed
    for change, message in [
        (lambda d: d.update(precision="bf16"), "precision is 'bf16'"),
        (lambda d: d.pop("made_by"), "made_by must be an object"),
        (lambda d: d["files"].update({"ner.onnx": "abc"}), "sha256 of ner.onnx"),
        (lambda d: d["graphs"].pop("stage2"), "missing graphs.stage2"),
        (lambda d: d["graphs"]["stage1"]["inputs"].append({"name": "pixels", "dtype": "float32", "shape": ["b"]}),
         "inputs the engine cannot fill"),
    ]:
        data = json.loads((joint / "manifest.json").read_text())
        change(data)
        with pytest.raises(BundleError, match=message) as err:
            Manifest(data)
        assert "\n" not in str(err.value)


def test_shipped_bundles_load_with_their_cards():
    from nere.engine.manifest import CARD

    root = Path(__file__).resolve().parents[1] / "artifacts"
    headlines = {"joint": "triples_f1", "ner": "entity_f1", "re": "relation_macro_f1"}
    for name in ("en-conll04-joint-int8", "zh-msra-ner-bilstm-crf-int8", "zh-sanwen-ner-bilstm-crf-int8",
                 "zh-sanwen-re-bilstm-int8"):
        m = Manifest.read(root / name)
        m.verify_files(root / name)
        assert (root / name / CARD).is_file() and CARD not in m.files
        assert m.headline()["metric"] == headlines[m.task]
        assert f"# {name}\n" in (root / name / CARD).read_text()


def test_shipped_chinese_pipeline_gives_both_tables():
    """The SanWen NER bundle with its RE bundle behind it: entities of the RE bundle's types
    and relations among them, from one engine."""
    from nere.engine import Engine

    root = Path(__file__).resolve().parents[1] / "artifacts"
    engine = Engine.load(root / "zh-sanwen-ner-bilstm-crf-int8", root / "zh-sanwen-re-bilstm-int8", threads=1)
    text = "王立新的妻子李秀英在杭州市西湖区开了一家书店。\n我的母亲住在江南的一个小镇上。"
    entities, relations = engine.extract([text])
    assert entities.num_rows >= 3 and relations.num_rows >= 1
    labels = set(Manifest.read(root / "zh-sanwen-re-bilstm-int8").data["re"]["relation_labels"])
    assert set(relations.column("label").to_pylist()) <= labels
    for row in entities.to_pylist():
        assert text[row["start"]:row["end"]] == row["text"] and "\n" not in row["text"]
