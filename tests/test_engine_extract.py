"""The in-memory API over the lookup-table bundles: offsets, windows, decoding, relations."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures_bundles import make_bundle, tag_of
from nere.engine.api import Engine
from nere.engine.errors import EngineError
from nere.engine.core.tags import tags_to_spans

# entity "units": a B word then up to two I words of the same label (<= the window overlap)
ENTITY_WORDS = {
    "word": {"Per": (["alice", "bob", "carol"], ["smith", "jones"]), "Org": (["acme", "globex"], ["corp", "inc"]),
             "Loc": (["paris", "london"], ["city"])},
    "char": {"Per": (["张", "王", "李"], ["三", "四"]), "Org": (["华"], ["为"]), "Loc": (["北"], ["京"])},
}
PLAIN = {
    "word": ["the", "works", "for", "in", "lives", "a", "and", "of", "café", "İstanbul", "straße", "ǅemal", "x_1",
             "Ωmega", "42", "naïve"],
    "char": ["是", "在", "的", "人", "天", "地", "日", "月", "a", "Z", "9", "ё"],
}
PUNCT = {"word": [",", ".", "!", "?", "...", ";", "\"", "—", "🙂", "(", ")"],
         "char": ["，", "。", "！", "？", "；", "“", "”", "、", "!", "."]}
SEPS = [" ", "  ", "\n", "\t", " \u3000", "\x00", " \x07 ", "\r\n"]


@st.composite
def documents(draw, kind: str) -> tuple[str, list[tuple[int, int, str]]]:
    """A random document and its entities, computed from how it was built."""
    items: list[tuple[str, str]] = []  # (token text, tag)
    for _ in range(draw(st.integers(0, 60))):
        what = draw(st.sampled_from(["entity", "plain", "plain", "punct"]))
        if what == "entity":
            label = draw(st.sampled_from(sorted(ENTITY_WORDS[kind])))
            first, rest = ENTITY_WORDS[kind][label]
            words = [draw(st.sampled_from(first))] + draw(st.lists(st.sampled_from(rest), max_size=2))
            if kind == "word":
                words = [draw(st.sampled_from([w, w.upper(), w.title()])) for w in words]
            items += [(w, tag_of(w)) for w in words]
        elif what == "plain":
            items.append((draw(st.sampled_from(PLAIN[kind])), "O"))
        else:
            items.append((draw(st.sampled_from(PUNCT[kind])), "O"))
    text, spans, tags = draw(st.sampled_from(["", " ", "\n"])), [], []
    for k, (tok, tag) in enumerate(items):
        if k:
            glue_ok = kind == "char" or tok in PUNCT[kind] or items[k - 1][0] in PUNCT[kind]  # words never touch
            sep = draw(st.sampled_from(SEPS + ([""] if glue_ok else [])))
            if "\n" in sep and tag.startswith("I-"):
                tag = "B-" + tag[2:]  # a line break ends the sentence, so the entity too
            text += sep
        spans.append((len(text), len(text) + len(tok)))
        tags.append(tag)
        text += tok
    text += draw(st.sampled_from(["", " ", "  \n"]))
    entities = [(spans[s][0], spans[e - 1][1], lab) for s, e, lab in tags_to_spans(tags, "BIO")]
    return text, entities


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("b")
    return {
        "word": make_bundle(root / "word", kind="word", max_length=16),
        "word_long": make_bundle(root / "word_long", kind="word", max_length=512),
        "char": make_bundle(root / "char", kind="char", max_length=12),
        "joint": make_bundle(root / "joint", task="joint", typed=True, max_length=16),
        "re": make_bundle(root / "re", task="re", max_length=16),
        "re_short": make_bundle(root / "re_short", task="re", max_length=8),
        "re_long": make_bundle(root / "re_long", task="re", max_length=512),
        "crf": make_bundle(root / "crf", decoding="crf", crf_forbid_o_to_i=True),
    }


@pytest.fixture(scope="module")
def engines(bundles) -> dict[str, Engine]:
    return {k: Engine.load(p, device="cpu", threads=1, batch_tokens=256)
            for k, p in bundles.items() if k not in ("re", "re_short", "re_long")}


def _by_doc(entities: pa.Table) -> dict:
    out: dict = {}
    for r in entities.to_pylist():
        out.setdefault(r["doc_id"], []).append(r)
    return out


@pytest.mark.parametrize("kind", ["word", "char"])
def test_offsets_match_the_original_text(engines, kind):
    """Property: every entity is exactly the one the document was built with, and its
    text is the document's slice, whatever the whitespace, scripts, control characters
    and sentence/window cuts."""

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(documents(kind), min_size=1, max_size=4))
    def check(docs):
        texts = [t for t, _ in docs]
        out = engines[kind].extract_all({"id": list(range(len(docs))), "text": texts})
        found = _by_doc(out.entities)
        failed = {r["doc_id"] for r in out.failures.to_pylist()}
        for i, (text, expected) in enumerate(docs):
            rows = found.get(i, [])
            if i in failed:
                assert not expected and not rows
                continue
            assert [(r["start"], r["end"], r["label"]) for r in rows] == expected
            assert all(r["text"] == text[r["start"] : r["end"]] for r in rows)
            assert [r["entity_id"] for r in rows] == list(range(len(rows)))
            assert [r["sentence_index"] for r in rows] == sorted(r["sentence_index"] for r in rows)

    check()


def test_long_sentences_are_windowed_not_truncated(engines):
    """A 300-token sentence through a 16-token model finds what a 512-token model finds."""
    words = []
    for k in range(100):
        words += [["alice", "smith", "jones"], ["acme", "corp"], ["the", "paris"], ["x"]][k % 4]
    text = " ".join(words)
    short = engines["word"].extract([text])[0]
    long = engines["word_long"].extract([text])[0]
    assert short.num_rows == 75 and short.equals(long)
    assert {r["text"] for r in short.to_pylist()} == {"alice smith jones", "acme corp", "paris"}


def test_window_edge_cut_entity_is_merged_whole(engines):
    # 14 content tokens per window, overlap 3: "alice smith" straddles the first edge
    text = " ".join(["the"] * 12 + ["alice", "smith", "jones"] + ["the"] * 12)
    rows = engines["word"].extract([text])[0].to_pylist()
    assert [(r["text"], r["label"]) for r in rows] == [("alice smith jones", "Per")]


def test_crf_decoding_is_used(engines):
    text = "the smith met alice smith"
    soft = [r["text"] for r in engines["word"].extract([text])[0].to_pylist()]
    crf = [r["text"] for r in engines["crf"].extract([text])[0].to_pylist()]
    assert soft == ["smith", "alice smith"]  # argmax: a stray I- tag starts an entity
    assert crf == ["alice smith"]  # Viterbi with the bundle's transitions forbids O -> I


def test_entity_score_is_mean_tag_probability(engines):
    import numpy as np

    row = engines["word"].extract(["alice smith"])[0].to_pylist()[0]
    p = np.exp(5.0) / (np.exp(5.0) + 6)  # the lookup table puts 5.0 on the tag, 0 on 6 others
    assert row["score"] == pytest.approx(p, rel=1e-6)


RE_TEXTS = [
    "Alice Smith works for Acme Corp in Paris. Globex is in London City!",
    "Bob and Carol Jones, of Globex Inc.",
    "the acme",
]
RE_EXPECTED = {
    (0, "Alice Smith", "Acme Corp", "Work_For"), (0, "Alice Smith", "Paris", "Located_In"),
    (0, "Acme Corp", "Paris", "Located_In"), (0, "Globex", "London City", "Located_In"),
    (1, "Bob", "Globex Inc", "Work_For"), (1, "Carol Jones", "Globex Inc", "Work_For"),
}


def _triples(relations: pa.Table) -> set:
    return {(r["doc_id"], r["head_text"], r["tail_text"], r["label"]) for r in relations.to_pylist()}


def test_joint_bundle_relations(engines):
    entities, relations = engines["joint"].extract(RE_TEXTS)
    assert _triples(relations) == RE_EXPECTED
    ents = {(r["doc_id"], r["entity_id"]): r["text"] for r in entities.to_pylist()}
    for r in relations.to_pylist():  # ids point at the right entities of the same document
        assert ents[(r["doc_id"], r["head_id"])] == r["head_text"]
        assert ents[(r["doc_id"], r["tail_id"])] == r["tail_text"]
        assert 0.0 < r["score"] <= 1.0


def test_small_inputs_run_in_the_calling_thread(engines, monkeypatch):
    """One unit of one batch (the online case) starts no reader or model thread; a larger
    input still overlaps them; both give the same tables as the step-by-step path."""
    import threading

    engine = engines["word"]
    started: list[str] = []
    real_start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: (started.append(self.name), real_start(self))[1])
    one = engine.extract(["alice smith works for acme corp"])
    assert started == []
    from nere.engine.api import UNIT_DOCS

    n_texts = 2 * UNIT_DOCS + 88  # 3 units
    texts = [f"alice smith works for acme corp number {i}" for i in range(n_texts)]
    many = engine.extract(texts)
    assert any(n.startswith("nere-reader") for n in started) and any("nere-stage1" in n for n in started)
    assert one[0].num_rows > 0 and many[0].num_rows == n_texts * one[0].num_rows
    pipe = engine.pipeline
    from nere.engine.pipeline import Unit

    ids = many[0].column("doc_id").to_pylist()
    assert ids == sorted(ids)  # document order kept across units
    step = pipe.infer(pipe.prepare(Unit(pa.array([0]), ["alice smith works for acme corp"])), overlap=False)
    assert step.entities.equals(one[0])


def test_separate_re_bundle(engines, bundles):
    engine = Engine.load(bundles["word"], re_bundle=bundles["re"], device="cpu", threads=1)
    assert engine.pipeline.reuse_tokens  # same tokenizer file: the unit's tokens serve both bundles
    assert _triples(engine.extract(RE_TEXTS)[1]) == RE_EXPECTED
    retokenized = Engine.load(bundles["word"], re_bundle=bundles["re"], device="cpu", threads=1)
    retokenized.pipeline.reuse_tokens = False
    for a, b in zip(engine.extract(RE_TEXTS), retokenized.extract(RE_TEXTS)):
        assert a.equals(b)
    # a character NER bundle in front: its tokens are not the RE bundle's, which re-tokenizes
    mixed = Engine.load(bundles["char"], re_bundle=bundles["re"], device="cpu", threads=1)
    assert not mixed.pipeline.reuse_tokens
    mixed.extract(RE_TEXTS)
    # an RE model with a shorter window than the sentence: windowed, near pairs still found
    short = Engine.load(bundles["word"], re_bundle=bundles["re_short"], device="cpu", threads=1)
    text = "alice smith works for acme corp " + "the " * 20 + "paris"
    got = _triples(short.extract([text])[1])
    assert (0, "alice smith", "acme corp", "Work_For") in got
    assert not any(t[2] == "paris" for t in got)  # 20 tokens apart: no 6-token window holds both


def test_flat_re_path_equals_the_general_path(bundles, monkeypatch):
    """The array path for the usual case (the RE bundle reuses the unit's tokens, every
    sentence fits one RE window) gives the general path's tables exactly: type-filtered
    pairs, sentences with one or no typed entity, several sentences per document, several
    RE batches; a sentence longer than the RE window sends the unit to the general path."""
    from nere.engine.pipeline import Pipeline

    texts = RE_TEXTS * 30 + ["Bob of Acme Corp met Carol Jones in Paris . " * 3, "Globex", "nothing here at all"]
    engine = Engine.load(bundles["word"], re_bundle=bundles["re"], device="cpu", threads=2, streams=2,
                         re_streams=2, batch_tokens=64)
    used: list[bool] = []
    real = Pipeline._flat_relations
    monkeypatch.setattr(Pipeline, "_flat_relations", lambda self, *a: (lambda r: used.append(r is not None) or r)(
        real(self, *a)))
    flat = engine.extract(texts)
    assert used and all(used) and flat[1].num_rows > 60
    monkeypatch.setattr(Pipeline, "_flat_relations", lambda self, *a: None)
    general = engine.extract(texts)
    for a, b in zip(flat, general):
        assert a.equals(b)
    monkeypatch.setattr(Pipeline, "_flat_relations", real)
    short = Engine.load(bundles["word"], re_bundle=bundles["re_short"], device="cpu", threads=1)
    used.clear()
    monkeypatch.setattr(Pipeline, "_flat_relations", lambda self, *a: (lambda r: used.append(r is not None) or r)(
        real(self, *a)))
    short.extract(["alice smith works for acme corp " + "the " * 20 + "paris"])
    assert used == [False]  # longer than the RE window: the general path windows it


def test_flat_re_path_equals_the_general_path_on_random_documents(bundles):
    """Property: on random documents (entities of every type, any whitespace, scripts and
    sentence cuts) the array path and the general path give the same tables."""
    engine = Engine.load(bundles["word_long"], re_bundle=bundles["re_long"], device="cpu", threads=1,
                         batch_tokens=96)
    pipe = engine.pipeline
    assert pipe.reuse_tokens
    real = pipe._flat_relations
    taken: list[bool] = []

    def counting(*args):
        result = real(*args)
        taken.append(result is not None)
        return result

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(documents("word"), min_size=1, max_size=6))
    def check(docs):
        data = {"id": list(range(len(docs))), "text": [t for t, _ in docs]}
        try:
            pipe._flat_relations = counting
            flat = engine.extract_all(data)
            pipe._flat_relations = lambda *args: None  # the general path, for this engine only
            general = engine.extract_all(data)
        finally:
            del pipe._flat_relations
        assert flat.entities.equals(general.entities) and flat.relations.equals(general.relations)
        relations.append(flat.relations.num_rows)

    relations: list[int] = []
    check()
    assert sum(taken) > 20 and sum(relations) > 50  # the array path ran, and found relations, on many examples


def test_separate_re_batches_run_on_re_streams_with_the_same_tables(bundles, monkeypatch):
    """With re_streams > 1 a unit's RE batches run on that many worker threads at once
    (each session on threads // re_streams); the tables equal one-at-a-time calls on
    sessions of the same thread count. The step-by-step path (no overlap) stays in the
    calling thread."""
    import threading

    import nere.engine.pipeline as pipeline_module

    texts = RE_TEXTS * 40
    serial = Engine.load(bundles["word"], re_bundle=bundles["re"], device="cpu", threads=1, batch_tokens=64)
    streamed = Engine.load(bundles["word"], re_bundle=bundles["re"], device="cpu", threads=2, streams=2,
                           re_streams=2, batch_tokens=64)
    assert (serial.re_streams, streamed.re_streams) == (1, 2) and streamed.describe()["re_streams"] == 2
    names: list[str] = []
    real = pipeline_module.run_stage1
    monkeypatch.setattr(pipeline_module, "run_stage1", lambda graph, *a: (
        names.append(threading.current_thread().name) if graph is streamed.re_bundle.stage1 else None,
        real(graph, *a))[1])
    want, got = serial.extract(texts), streamed.extract(texts)
    assert got[1].num_rows > 40
    for a, b in zip(want, got):
        assert a.equals(b)
    assert len(names) > 2 and all(n.startswith("nere-re") for n in names)  # several batches, all on RE workers
    pipe = streamed.pipeline
    from nere.engine.pipeline import Unit

    names.clear()
    step = pipe.infer(pipe.prepare(Unit(pa.array(list(range(len(texts)))), texts)), overlap=False)
    assert step.relations.num_rows == got[1].num_rows and names and not any(n.startswith("nere-re") for n in names)
    with pytest.raises(EngineError, match="re_streams must be positive"):
        Engine.load(bundles["word"], re_bundle=bundles["re"], device="cpu", re_streams=0)
    with pytest.raises(EngineError, match="give the RE bundle too"):
        Engine.load(bundles["word"], device="cpu", re_streams=2)


def test_separate_re_over_several_units_equals_each_unit_step_by_step(bundles):
    """Over several units (stage 1 running on from one into the next, RE batches on two
    workers), the tables equal each unit run step by step, in order."""
    from nere.engine.api import UNIT_DOCS
    from nere.engine.pipeline import Unit

    texts = [t.replace("Paris", f"Paris {i}") for i in range(2 * UNIT_DOCS + 100) for t in RE_TEXTS[:1]]
    engine = Engine.load(bundles["word"], re_bundle=bundles["re"], device="cpu", threads=2, streams=2, re_streams=2,
                         batch_tokens=256)
    entities, relations = engine.extract(texts)
    pipe = engine.pipeline
    want_e, want_r = [], []
    for lo in range(0, len(texts), UNIT_DOCS):
        chunk = texts[lo : lo + UNIT_DOCS]
        step = pipe.infer(pipe.prepare(Unit(pa.array(list(range(lo, lo + len(chunk)))), chunk)), overlap=False)
        want_e.append(step.entities)
        want_r.append(step.relations)
    assert relations.num_rows >= len(texts)  # every document has relations
    assert entities.equals(pa.concat_tables(want_e)) and relations.equals(pa.concat_tables(want_r))


def test_io_binding_path_gives_the_same_results(bundles):
    plain = Engine.load(bundles["joint"], device="cpu", threads=1)
    bound = Engine.load(bundles["joint"], device="cpu", threads=1)
    bound.bundle.stage1.io_binding = True  # the CUDA code path, on CPU memory
    for a, b in zip(plain.extract(RE_TEXTS), bound.extract(RE_TEXTS)):
        assert a.equals(b)


def test_bad_rows_are_reported_and_the_rest_processed(engines):
    texts = [None, 5, "", "  \n", "a" * 1_000_001, "\x00\x01", "ok \x07 alice smith", "混合 mixed bob 文字", 3.5]
    ids = ["n", "int", "empty", "blank", "huge", "ctrl", "cleaned", "mixed", "float"]
    out = engines["word"].extract_all({"id": ids, "text": texts})
    reasons = {r["doc_id"]: r["reason"] for r in out.failures.to_pylist()}
    assert reasons == {
        "n": "null text", "int": "text is not a string (int)", "empty": "empty text", "blank": "blank text",
        "huge": "text too long (1000001 chars > max_doc_chars 1000000)", "ctrl": "only control characters",
        "float": "text is not a string (float)",
    }
    assert [(r["doc_id"], r["text"]) for r in out.entities.to_pylist()] == [("cleaned", "alice smith"), ("mixed", "bob")]
    assert out.stats == {"documents": 9, "failed": 7, "cleaned": 2, "tokens": 7}
    assert [r["row"] for r in out.failures.to_pylist()] == [0, 1, 2, 3, 4, 5, 8]


def test_null_ids_and_input_forms(engines):
    table = pa.table({"doc": pa.array([7, None, 9], pa.int16()), "body": ["alice", "bob", "carol"]})
    out = engines["word"].extract_all(table, id_col="doc", text_col="body")
    assert out.entities.schema.field("doc_id").type == pa.int16()
    assert out.entities.column("doc_id").to_pylist() == [7, 9]
    assert out.failures.to_pylist() == [{"doc_id": None, "source": "<table>", "row": 1, "reason": "null doc_id"}]
    batches = table.to_batches(max_chunksize=1)
    assert engines["word"].extract(batches, id_col="doc", text_col="body")[0].equals(out.entities)
    with pytest.raises(ValueError, match="no column 'id'"):
        engines["word"].extract(table)
    empty = engines["word"].extract([])
    assert empty[0].num_rows == 0 and empty[0].schema.names[:2] == ["doc_id", "entity_id"]


def test_results_do_not_depend_on_batch_budget(bundles):
    texts = [" ".join(["alice smith"] * k + ["the acme corp"] * (k % 3)) for k in range(1, 40)]
    a = Engine.load(bundles["joint"], device="cpu", batch_tokens=16).extract(texts)
    b = Engine.load(bundles["joint"], device="cpu", batch_tokens=100_000).extract(texts)
    assert a[0].equals(b[0]) and a[1].equals(b[1])


def test_engine_imports_without_torch(bundles):
    """`nere.engine` (API, CLI, pipeline) imports and runs where torch cannot be imported."""
    code = f"""
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
from nere.engine import Engine
import nere.engine.cli, nere.engine.api, nere.engine.pipeline, nere.engine.parquet_io
from nere.cli import main
engine = Engine.load({str(bundles["joint"])!r}, device="cpu", threads=1)
ents, rels = engine.extract(["Alice Smith works for Acme Corp."])
assert ents.num_rows == 2 and rels.num_rows == 1
bad = [m for m in sys.modules if m.split(".")[0] in ("transformers", "torch") or m.startswith(("nere.train", "nere.export"))]
assert not [m for m in bad if sys.modules[m] is not None], bad
try:
    main(["extract", "--help"])
except SystemExit as e:
    assert e.code == 0
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "--re-model" in res.stdout


@pytest.mark.parametrize("kind", ["joint", "crf", "char"])
def test_overlapped_stage1_equals_serial(engines, kind):
    """Stage 1 one batch ahead in a worker thread changes nothing in the tables."""
    from nere.engine.pipeline import Unit

    texts = [" ".join(["alice smith works for acme corp"] * (k % 5 + 1) + ["in paris"] * (k % 3))
             for k in range(60)] + ["北京 张三 " * (k % 7 + 1) for k in range(30)]
    pipe = engines[kind].pipeline
    unit = Unit(pa.array(range(len(texts))), texts)
    prep = pipe.prepare(unit)
    assert len(prep.batches) > 2  # several batches, so the worker really runs ahead
    a, b = pipe.infer(prep, overlap=True), pipe.infer(prep, overlap=False)
    assert a.entities.num_rows > 0
    assert a.entities.equals(b.entities) and a.relations.equals(b.relations)


@pytest.mark.parametrize("kind", ["joint", "crf", "char"])
def test_group_decoding_equals_batch_by_batch(engines, kind, monkeypatch):
    """Decoding several stage-1 batches together (padded to the widest) changes nothing,
    relations of joint bundles included."""
    import nere.engine.pipeline as pipeline_module
    from nere.engine.pipeline import Unit
    from nere.engine.stages import decode_groups

    texts = [" ".join(["alice smith works for acme corp"] * (k % 5 + 1) + ["in paris"] * (k % 3))
             for k in range(60)] + ["北京 张三 " * (k % 7 + 1) for k in range(30)]
    pipe = engines[kind].pipeline
    prep = pipe.prepare(Unit(pa.array(range(len(texts))), texts))
    f = pipe.ner.featurizer
    grouped = decode_groups(prep.batches, prep.row_n, f, max(pipeline_module.DECODE_GROUP_POSITIONS, pipe.batch_tokens))
    assert max(len(g) for g in grouped) > 1 and [k for g in grouped for k in g] == list(range(len(prep.batches)))
    together = pipe.infer(prep)
    monkeypatch.setattr(pipeline_module, "DECODE_GROUP_POSITIONS", 0)
    monkeypatch.setattr(pipe, "batch_tokens", 0)  # budget 0: every batch a group of its own
    assert all(len(g) == 1 for g in decode_groups(prep.batches, prep.row_n, f, 0))
    alone = pipe.infer(prep)
    assert together.entities.num_rows > 0 and (kind != "joint" or together.relations.num_rows > 0)
    assert together.entities.equals(alone.entities) and together.relations.equals(alone.relations)


@pytest.mark.parametrize("kind", ["joint", "crf"])
def test_one_stage1_stream_across_units(engines, kind, monkeypatch):
    """infer_stream: the same tables as unit by unit (an all-blank unit included), in
    order, and the next unit's batches are queued before this unit's tables come out."""
    import nere.engine.pipeline as pipeline_module
    from nere.engine.pipeline import Unit

    pipe = engines[kind].pipeline
    texts = [" ".join(["alice smith works for acme corp"] * (k % 5 + 1) + ["in paris"] * (k % 3)) for k in range(90)]
    chunks = [texts[:30], [" ", ""], texts[30:70], texts[70:]]
    preps = [pipe.prepare(Unit(pa.array([f"{u}-{i}" for i in range(len(c))]), c)) for u, c in enumerate(chunks)]
    assert not preps[1].batches and all(len(p.batches) > 1 for p in (preps[0], preps[2], preps[3]))
    one_by_one = [pipe.infer(p) for p in preps]
    events = []
    real = pipeline_module.decode_groups
    monkeypatch.setattr(pipeline_module, "decode_groups", lambda *a: events.append("queued") or real(*a))
    got = []
    for key, result in pipe.infer_stream(enumerate(preps)):
        events.append(f"out {key}")
        got.append((key, result))
    assert [k for k, _ in got] == [0, 1, 2, 3]
    for (_, a), b in zip(got, one_by_one):
        assert a.entities.equals(b.entities) and a.relations.equals(b.relations) and a.failures.equals(b.failures)
    assert one_by_one[0].entities.num_rows > 0 and one_by_one[1].failed == 2
    # unit 1 (and unit 2 behind it, as unit 1 has no batches) is queued before unit 0 is out
    assert events.index("out 0") > 2 and events[:3] == ["queued"] * 3


@pytest.mark.parametrize("kind", ["joint", "crf"])
def test_streams_change_nothing_in_the_tables(bundles, engines, kind):
    """Several stage-1 calls in flight at once: the same tables, in the same order."""
    texts = [" ".join(["alice smith works for acme corp"] * (k % 5 + 1) + ["in paris"] * (k % 3))
             for k in range(80)]
    one = engines[kind].extract_all(texts)
    multi = Engine.load(bundles[kind], device="cpu", threads=2, batch_tokens=64, streams=3)
    assert multi.streams == 3 and multi.call_threads == 1 and multi.describe()["streams"] == 3
    got = multi.extract_all(texts)
    assert one.entities.num_rows > 0 and (kind != "joint" or one.relations.num_rows > 0)
    assert got.entities.equals(one.entities) and got.relations.equals(one.relations)


@pytest.mark.parametrize("kind", ["joint", "crf"])
def test_stage1_jobs_of_several_batches_change_nothing(bundles, kind, monkeypatch):
    """A worker runs a job of consecutive batches of one unit, up to STAGE1_JOB_POSITIONS
    padded positions (a batch alone may exceed it); one batch per job gives the same tables."""
    import nere.engine.pipeline as pipeline_module

    jobs: list[list[tuple[int, int]]] = []  # per job: (unit key, padded positions) of its batches
    real_ahead = pipeline_module._ahead

    def recording_ahead(work, items, depth=1, workers=1):
        items = list(items)
        jobs.extend([(id(it[1]), b.input_ids.size) for _, b in it[3]] for it in items)
        return real_ahead(work, items, depth, workers)

    monkeypatch.setattr(pipeline_module, "_ahead", recording_ahead)
    from nere.engine.api import UNIT_DOCS

    texts = [" ".join(["alice smith works for acme corp"] * (k % 5 + 1) + ["in paris"] * (k % 3))
             for k in range(UNIT_DOCS + 200)]  # several units, run as one stream of jobs
    engine = Engine.load(bundles[kind], device="cpu", threads=2, batch_tokens=64, streams=2)
    many = engine.extract_all(texts)
    grouped = [j for j in jobs if len(j) > 1]
    assert len({u for j in jobs for u, _ in j}) == 4  # 1,024 + 200 documents, the first and last 128 apart
    assert grouped and all(len({u for u, _ in j}) == 1 for j in jobs)  # several batches, one unit each
    assert all(sum(p for _, p in j) <= pipeline_module.STAGE1_JOB_POSITIONS for j in grouped)
    jobs.clear()
    monkeypatch.setattr(pipeline_module, "STAGE1_JOB_POSITIONS", 1)
    one = engine.extract_all(texts)
    assert jobs and all(len(j) == 1 for j in jobs)
    assert many.entities.num_rows > 0 and many.entities.equals(one.entities) and many.relations.equals(one.relations)


def test_streams_must_be_positive(bundles):
    from nere.engine.errors import EngineError

    with pytest.raises(EngineError, match="streams must be positive"):
        Engine.load(bundles["crf"], device="cpu", streams=0)


@pytest.mark.parametrize("depth", [1, 3])
def test_stage1_worker_runs_depth_items_ahead(depth):
    """While the caller holds item k, the worker computes items k+1 .. k+depth (no more)."""
    import time

    from nere.engine.pipeline import _ahead

    started: list[int] = []
    it = _ahead(lambda x: started.append(x) or x, list(range(8)), depth=depth)
    assert next(it) == 0
    time.sleep(0.3)  # the caller is busy with item 0
    assert started == list(range(depth + 1))
    assert list(it) == list(range(1, 8))


def test_stage1_worker_errors_reach_the_caller():
    from nere.engine.pipeline import _ahead

    def work(x: int) -> int:
        if x == 3:
            raise RuntimeError("boom at 3")
        return x * 10

    assert list(_ahead(work, [1, 2])) == [10, 20]
    got = []
    with pytest.raises(RuntimeError, match="boom at 3"):
        for y in _ahead(work, [1, 2, 3, 4]):
            got.append(y)
    assert got == [10, 20]


def test_engine_tunes_the_allocator_unless_told_not_to(bundles, monkeypatch):
    from nere.engine import allocator

    calls = []
    monkeypatch.setattr(allocator, "tune_allocator", lambda: calls.append(1))
    monkeypatch.setattr(allocator, "allocator_settings", lambda: {"library": "glibc x"})
    left_alone = Engine.load(bundles["crf"], device="cpu", threads=1, tune_allocator=False)
    assert calls == []
    tuned = Engine.load(bundles["crf"], device="cpu", threads=1)
    assert calls == [1] and tuned.describe()["allocator"] == {"library": "glibc x"}
    assert left_alone.extract_all(["alice smith works for acme corp"]).entities.num_rows > 0
