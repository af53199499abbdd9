"""Streaming runs over Parquet: outputs, errors, bad rows, resume after SIGKILL, determinism."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from fixtures_bundles import make_bundle
from nere.cli import main
from nere.engine.api import Engine
from nere.engine.errors import EngineError

TABLES = ("entities", "relations", "failures")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("b") / "joint", task="joint", typed=True)


def corpus_texts(n: int, start: int = 0) -> list:
    """Documents that all hold entities, with a bad row now and then."""
    out = []
    for i in range(start, start + n):
        if i % 97 == 5:
            out.append(None)
        elif i % 89 == 7:
            out.append("   ")
        else:
            k = 1 + i % 5
            out.append(f"Alice Smith works for Acme Corp, doc {i}. " + "Bob lives in Paris City! " * k
                       + ("张三 \x07 and carol." if i % 3 == 0 else ""))
    return out


def write_corpus(path: Path, n: int, start: int = 0, **kw) -> Path:
    ids = [f"doc-{i:05d}" for i in range(start, start + n)]
    pq.write_table(pa.table({"id": ids, "text": corpus_texts(n, start), "other": list(range(n))}), path, **kw)
    return path


def read_dir(out: Path, table: str) -> pa.Table:
    files = sorted((out / table).glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def files_bytes(out: Path) -> dict[str, bytes]:
    return {f"{t}/{p.name}": p.read_bytes() for t in TABLES for p in sorted((out / t).iterdir())}


def cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["extract", *args, "--no-progress"])
    return res.exit_code, res.output


def test_run_writes_the_documented_tables(tmp_path, bundle):
    corpus = write_corpus(tmp_path / "c.parquet", 300)
    code, output = cli(str(corpus), "--model", str(bundle), "--out", str(tmp_path / "out"), "--threads", "1")
    assert code == 0, output
    assert "documents: 300 read, 292 written, 8 failed (blank text: 4, null text: 4)" in output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["provider"] == "CPUExecutionProvider" and summary["bundle"]["sha256"]
    assert summary["documents_read"] == 300 and summary["documents_failed"] == 8
    assert summary["failures"][0] == {"doc_id": "doc-00005", "source": str(corpus), "row": 5, "reason": "null text"}
    out = str(tmp_path / "out")
    con = duckdb.connect()
    described = con.sql(f"describe select * from read_parquet('{out}/entities/*.parquet')").fetchall()
    types = {row[0]: row[1] for row in described}
    assert types == {"doc_id": "VARCHAR", "entity_id": "INTEGER", "start": "INTEGER", "end": "INTEGER",
                     "text": "VARCHAR", "label": "VARCHAR", "score": "FLOAT", "sentence_index": "INTEGER"}
    # every entity's text is the document's substring (DuckDB counts characters too)
    bad, total = con.sql(f"""
        select count(*) filter (where substring(c.text, e.start + 1, e."end" - e.start) <> e.text), count(*)
        from read_parquet('{out}/entities/*.parquet') e join read_parquet('{corpus}') c on c.id = e.doc_id""").fetchall()[0]
    assert bad == 0 and total == summary["entities"] > 0
    rels = con.sql(f"""select r.label, count(*) from read_parquet('{out}/relations/*.parquet') r
        join read_parquet('{out}/entities/*.parquet') h on h.doc_id = r.doc_id and h.entity_id = r.head_id
        join read_parquet('{out}/entities/*.parquet') t on t.doc_id = r.doc_id and t.entity_id = r.tail_id
        where h.text = r.head_text and t.text = r.tail_text group by 1 order by 1""").fetchall()
    assert sum(n for _, n in rels) == summary["relations"] and {lab for lab, _ in rels} == {"Located_In", "Work_For"}
    schema = pl.read_parquet(f"{out}/relations/*.parquet").schema
    assert dict(schema) == {"doc_id": pl.String, "head_id": pl.Int32, "tail_id": pl.Int32, "head_text": pl.String,
                            "tail_text": pl.String, "label": pl.String, "score": pl.Float32}
    fails = pl.read_parquet(f"{out}/failures/*.parquet")
    assert fails.height == 8 and set(fails["reason"]) == {"null text", "blank text"}


def test_same_input_same_bytes(tmp_path, bundle):
    corpus = write_corpus(tmp_path / "c.parquet", 400)
    engine = Engine.load(bundle, device="cpu", threads=1, part_docs=100, unit_docs=256)
    engine.run([corpus], tmp_path / "a", progress=False)
    engine.run([corpus], tmp_path / "b", progress=False)
    a, b = files_bytes(tmp_path / "a"), files_bytes(tmp_path / "b")
    assert len(a) == 3 * 3 and a == b  # 400 docs, units of 128 + 128 + 16 + 128 (small edges) -> 3 parts per table


def test_cli_streams_write_the_same_bytes(tmp_path, bundle):
    """`nere extract --streams 2` (two model calls in flight) writes byte-identical tables."""
    corpus = write_corpus(tmp_path / "c.parquet", 300)
    runs = {}
    for streams in ("1", "2"):
        out = tmp_path / f"s{streams}"
        code, output = cli(str(corpus), "--model", str(bundle), "--out", str(out), "--threads", "2",
                           "--batch-tokens", "256", "--streams", streams)
        assert code == 0, output
        summary = json.loads((out / "summary.json").read_text())
        assert (summary["streams"], summary["threads_per_stream"]) == (int(streams), 2 // int(streams))
        runs[streams] = files_bytes(out)
    assert runs["1"] == runs["2"] and len(runs["1"]) == 3
    code, output = cli(str(corpus), "--model", str(bundle), "--out", str(tmp_path / "bad"), "--streams", "0")
    assert code == 2 and "--streams" in output and "Traceback" not in output


def test_int_ids_bad_rows_and_limit(tmp_path, bundle):
    pq.write_table(pa.table({"id": pa.array([1, 2, 3], pa.int64()), "text": [None, "", "x" * 50]}),
                   tmp_path / "n.parquet")
    s = Engine.load(bundle, device="cpu", max_doc_chars=40).run(tmp_path / "n.parquet", tmp_path / "o1", progress=False)
    assert s["documents_failed"] == 3 and set(s["failure_reasons"]) == {"null text", "empty text", "text too long"}
    assert read_dir(tmp_path / "o1", "entities").schema.field("doc_id").type == pa.int64()
    # a non-string row is a per-row failure where rows carry Python objects (the in-memory API)
    engine = Engine.load(bundle, device="cpu")
    mixed = engine.extract_all({"id": [1, 2], "text": [10, "Bob lives"]})
    assert mixed.failures.column("reason").to_pylist() == ["text is not a string (int)"]
    corpus = write_corpus(tmp_path / "c.parquet", 50)
    s = engine.run([corpus], tmp_path / "o2", limit=12, progress=False)
    docs = set(read_dir(tmp_path / "o2", "entities")["doc_id"].to_pylist())
    assert s["documents_read"] == 12 and docs == {f"doc-{i:05d}" for i in range(12)} - {"doc-00005", "doc-00007"}


def test_input_errors_are_one_line_and_write_nothing(tmp_path, bundle):
    good = write_corpus(tmp_path / "good.parquet", 20)
    out = tmp_path / "out"
    code, output = cli(str(good), "--model", str(bundle), "--out", str(out), "--text-col", "body")
    assert code != 0 and output.strip().startswith("Error: input")
    assert f"{good}: no text column 'body' (it has id, text, other)" in output and not out.exists()
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 this is not parquet")
    code, output = cli(str(good), str(junk), "--model", str(bundle), "--out", str(out))
    assert code != 0 and f"input {junk}: not a readable Parquet file" in output and not out.exists()
    code, output = cli(str(tmp_path / "missing.parquet"), "--model", str(bundle), "--out", str(out))
    assert code != 0 and "no such file or folder" in output and not out.exists()
    code, output = cli(str(good), "--model", str(tmp_path), "--out", str(out))
    assert code != 0 and "manifest.json: missing" in output and not out.exists()
    assert len(output.strip().splitlines()) == 1


def test_corrupt_data_page_fails_cleanly(tmp_path, bundle):
    first = write_corpus(tmp_path / "a.parquet", 300)
    bad = write_corpus(tmp_path / "b.parquet", 3000, start=300, row_group_size=1000)
    col = pq.ParquetFile(bad).metadata.row_group(2).column(1)
    data = bytearray(bad.read_bytes())
    pos = (col.dictionary_page_offset or col.data_page_offset) + 200
    data[pos : pos + 32] = bytes(b ^ 0xFF for b in data[pos : pos + 32])
    bad.write_bytes(bytes(data))
    out = tmp_path / "out"
    code, output = cli(str(first), str(bad), "--model", str(bundle), "--out", str(out))
    assert code != 0 and f"input {bad}: cannot read rows after row" in output
    assert not out.exists()  # nothing was committed: no half-written folder left
    code, output = cli(str(first), str(bad), "--model", str(bundle), "--out", str(out), "--part-docs", "100")
    assert code != 0
    # committed parts stay (resumable); no temporary or unlisted part remains
    progress = json.loads((out / "progress.json").read_text())
    listed = {p["name"] for p in progress["parts"]}
    assert listed and not progress["complete"] and not (out / "summary.json").exists()
    for t in TABLES:
        assert {p.name for p in (out / t).iterdir()} == listed


def test_out_dir_rules(tmp_path, bundle):
    corpus = write_corpus(tmp_path / "c.parquet", 30)
    out = tmp_path / "out"
    args = [str(corpus), "--model", str(bundle), "--out", str(out)]
    assert cli(*args)[0] == 0
    code, output = cli(*args)
    assert code != 0 and "is not empty; use --resume to continue its run or --overwrite to replace it" in output
    assert cli(*args, "--overwrite")[0] == 0
    code, output = cli(*args, "--resume")  # a finished run: nothing to do, same summary
    assert code == 0 and "0 documents this run; 30 done before resuming" in output
    code, output = cli(*args, "--resume", "--limit", "5")
    assert code != 0 and "cannot resume" in output and "limit was None, now 5" in output
    code, output = cli(*args, "--resume", "--batch-tokens", "333")
    assert code != 0 and "batch_tokens was 2048, now 333" in output and "(pass --batch-tokens 2048)" in output
    (out / "notes.txt").write_text("mine")
    code, output = cli(*args, "--overwrite")
    assert code != 0 and "holds files nere extract did not write (notes.txt)" in output
    assert (out / "notes.txt").exists() and (out / "entities").exists()
    with pytest.raises(EngineError, match="either --resume or --overwrite"):
        Engine.load(bundle, device="cpu").run([corpus], out, resume=True, overwrite=True, progress=False)


def _parts_done(out: Path) -> int:
    try:
        return len(json.loads((out / "progress.json").read_text())["parts"])
    except (OSError, ValueError):
        return 0


def test_resume_after_sigkill_is_exactly_once(tmp_path, bundle):
    files = [write_corpus(tmp_path / "a.parquet", 2600), write_corpus(tmp_path / "b.parquet", 1400, start=2600)]
    ref = tmp_path / "ref"
    Engine.load(bundle, device="cpu", threads=1, part_docs=200).run(files, ref, progress=False)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "nere.cli", "extract", *map(str, files), "--model", str(bundle), "--out", str(out),
           "--part-docs", "200", "--threads", "1", "--no-progress"]
    killed_mid_run = 0
    for attempt, (delay, parts) in enumerate([(0.3, 0), (0.0, 3), (0.0, 9)]):
        proc = subprocess.Popen(cmd + (["--resume"] if attempt else []), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        time.sleep(delay)
        while proc.poll() is None and _parts_done(out) < parts:
            time.sleep(0.002)
        if proc.poll() is None:
            killed_mid_run += 1
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert killed_mid_run >= 2, "the run finished before it could be killed; the test proved nothing"
    final = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr[-2000:]
    assert "done before resuming" in final.stdout
    assert files_bytes(out) == files_bytes(ref)  # identical to the run that was never killed
    entities = read_dir(out, "entities")
    keys = list(zip(entities["doc_id"].to_pylist(), entities["entity_id"].to_pylist()))
    assert len(keys) == len(set(keys))  # no document twice
    seen = set(entities["doc_id"].to_pylist()) | set(read_dir(out, "failures")["doc_id"].to_pylist())
    assert seen == {f"doc-{i:05d}" for i in range(4000)}  # and none missing
    progress = json.loads((out / "progress.json").read_text())
    ranges = sorted((f, a, b) for p in progress["parts"] for f, a, b in p["ranges"])
    assert progress["complete"] and _contiguous(ranges, [2600, 1400])


def _contiguous(ranges: list[tuple[int, int, int]], sizes: list[int]) -> bool:
    """Ranges tile each file [0, rows) with no gap and no overlap."""
    for f, size in enumerate(sizes):
        mine = [(a, b) for g, a, b in ranges if g == f]
        if mine[0][0] != 0 or mine[-1][1] != size or any(x[1] != y[0] for x, y in zip(mine, mine[1:])):
            return False
    return True


def test_separate_re_bundle_cli_and_path_input(tmp_path, bundle):
    corpus = write_corpus(tmp_path / "c.parquet", 60)
    ner = make_bundle(tmp_path / "ner")
    re_ = make_bundle(tmp_path / "re", task="re")
    code, output = cli(str(corpus), "--model", str(ner), "--re-model", str(re_), "--out", str(tmp_path / "sep"))
    assert code == 0, output
    assert "re bundle:" in output
    joint = Engine.load(bundle, device="cpu")
    entities, relations = joint.extract(str(corpus))  # a Parquet path works in memory too

    def triples(t: pa.Table) -> set:
        return {(r["doc_id"], r["head_id"], r["tail_id"], r["label"]) for r in t.to_pylist()}

    assert relations.num_rows > 0 and triples(read_dir(tmp_path / "sep", "relations")) == triples(relations)
    assert read_dir(tmp_path / "sep", "entities").equals(entities)
    code, output = cli(str(corpus), "--model", str(re_), "--out", str(tmp_path / "x"))
    assert code != 0 and "is RE-only: pass it as the RE bundle (--re-model)" in output
    code, output = cli(str(corpus), "--model", str(bundle), "--re-model", str(re_), "--out", str(tmp_path / "x"))
    assert code != 0 and "joint bundle with its own relation stage" in output


def test_device_cuda_without_gpu_is_one_line(tmp_path, bundle):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the no-GPU error cannot be provoked here")
    corpus = write_corpus(tmp_path / "c.parquet", 5)
    code, output = cli(str(corpus), "--model", str(bundle), "--out", str(tmp_path / "o"), "--device", "cuda")
    assert code != 0 and output.startswith("Error: device cuda:") and len(output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_default_batch_tokens_follow_the_recurrent_flag_and_the_provider(tmp_path, bundle):
    """Small batches for a recurrent stage 1 on CPU, 4,096 for other graphs and bundles
    exported before the flag, 65,536 on CUDA whatever the graph; an explicit value wins."""
    from nere.engine.api import auto_batch_tokens
    from nere.engine.bundle import CUDA

    rec = {"graphs": {"stage1": {"recurrent": True}}}
    cpu = "CPUExecutionProvider"
    assert auto_batch_tokens(rec, cpu) == 1024 and auto_batch_tokens(rec, CUDA) == 65536
    assert auto_batch_tokens({"graphs": {"stage1": {"recurrent": False}}}, cpu) == 2048
    assert auto_batch_tokens({"graphs": {"stage1": {}}}, cpu) == 2048 and auto_batch_tokens(None, cpu) == 2048
    assert auto_batch_tokens(None, CUDA) == 65536
    assert Engine.load(bundle, device="cpu", threads=2).batch_tokens == 2048  # the test bundle is no LSTM
    assert Engine.load(bundle, device="cpu", threads=2, batch_tokens=333).batch_tokens == 333
    shipped = Engine.load(Path(__file__).resolve().parents[1] / "artifacts" / "zh-msra-ner-bilstm-crf-int8",
                          device="cpu", threads=2)  # a recurrent bundle, as exported
    assert (shipped.batch_tokens, shipped.streams) == (1024, 2)


def test_default_streams_follow_the_recurrent_flag(tmp_path, bundle):
    """Two model calls at once when stage 1 is recurrent (graphs.stage1.recurrent) or reads no
    [CLS] token (tokenizer.cls_token null: no BERT-style encoder) on 2+
    threads, one otherwise; an explicit value wins; an unreadable manifest falls back to 1
    (load reports the error)."""
    from nere.engine.api import auto_streams, read_manifest_json

    rec = {"graphs": {"stage1": {"recurrent": True}}}
    assert auto_streams(rec, 2) == 2 and auto_streams(rec, 16) == 2 and auto_streams(rec, 1) == 1
    assert auto_streams({"graphs": {"stage1": {"recurrent": False}}}, 8) == 1 and auto_streams(None, 4) == 1
    assert auto_streams({"graphs": {"stage1": {}}}, 4) == 1  # bundles exported before the flag
    acnn = {"graphs": {"stage1": {"recurrent": False}}, "tokenizer": {"cls_token": None}}  # no [CLS]: not BERT-style
    bert = {"graphs": {"stage1": {"recurrent": False}}, "tokenizer": {"cls_token": "[CLS]"}}
    assert auto_streams(acnn, 2) == 2 and auto_streams(acnn, 1) == 1 and auto_streams(bert, 8) == 1
    assert auto_streams({"graphs": {"stage1": {}}, "tokenizer": {}}, 4) == 1
    m = read_manifest_json(bundle)
    assert m["graphs"]["stage1"].get("recurrent") is not True and read_manifest_json(tmp_path / "missing") is None
    engine = Engine.load(bundle, device="cpu", threads=2)
    assert (engine.streams, engine.call_threads) == (1, 2)
    assert Engine.load(bundle, device="cpu", threads=2, streams=2).streams == 2
    with pytest.raises(EngineError):
        Engine.load(tmp_path / "missing", device="cpu")


def test_engine_config_fields_overrides_and_errors(bundle):
    """One frozen config: keyword overrides replace its fields, unknown ones and bad
    values are one-line errors, and the auto defaults are filled from the bundle."""
    from dataclasses import FrozenInstanceError

    from nere.engine.config import EngineConfig
    from nere.engine.errors import EngineError

    base = EngineConfig(device="cpu", threads=2, part_docs=7)
    with pytest.raises(FrozenInstanceError):
        base.threads = 3  # type: ignore[misc]
    engine = Engine.load(bundle, config=base, threads=1, unit_docs=64)
    assert engine.config == EngineConfig(device="cpu", threads=1, part_docs=7, unit_docs=64)
    assert engine.threads == 1 and engine.streams == 1 and engine.batch_tokens == 2048
    resolved = engine.pipeline.config
    assert (resolved.threads, resolved.streams, resolved.re_streams, resolved.batch_tokens) == (1, 1, 1, 2048)
    with pytest.raises(EngineError, match="unknown engine setting 'thread'"):
        Engine.load(bundle, thread=2)
    for field in ("batch_tokens", "part_docs", "unit_docs", "unit_chars", "streams"):
        with pytest.raises(EngineError, match=f"{field} must be positive"):
            EngineConfig(**{field: 0})
