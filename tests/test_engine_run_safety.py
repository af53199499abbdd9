"""A run's first-hour safety: a wrong text column is refused, an empty input still writes
its tables, a run where every row failed exits non-zero, and one output folder is written
by one run at a time (a killed run's lock goes with it, so --resume still works)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from fixtures_bundles import make_bundle
from nere.cli import main
from nere.engine.api import Engine
from nere.engine.errors import EngineError
from nere.engine.lock import LOCK_NAME, FolderLock
from nere.engine.tables import entity_schema, failure_schema, relation_schema

TABLES = ("entities", "relations", "failures")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("b") / "joint", task="joint", typed=True)


@pytest.fixture(scope="module")
def engine(bundle) -> Engine:
    return Engine.load(bundle, device="cpu", threads=1)


def cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["extract", *args, "--no-progress"])
    return res.exit_code, res.output


def short_corpus(path: Path, n: int) -> Path:
    """``n`` short documents, each holding entities (so each appears in entities/)."""
    texts = [f"Alice works for Acme Corp, doc {i}. Bob lives in Paris!" for i in range(n)]
    pq.write_table(pa.table({"id": [f"d{i:05d}" for i in range(n)], "text": texts}), path)
    return path


def read_parts(out: Path, table: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted((out / table).glob("part-*.parquet"))])


# ---------------------------------------------------------------- wrong text column
@pytest.mark.parametrize("text, shown", [(pa.array([1, 2], pa.int64()), "int64"),
                                         (pa.array([b"Bob", b"Ann"], pa.binary()), "binary")])
def test_wrong_type_text_column_is_one_line_error(tmp_path, bundle, engine, text, shown):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "body": text}), path)
    out = tmp_path / "out"
    code, output = cli(str(path), "--model", str(bundle), "--out", str(out), "--text-col", "body")
    assert code == 1 and "Traceback" not in output and len(output.strip().splitlines()) == 1
    assert output.startswith(f"Error: input {path}: text column 'body' is {shown}, not string")
    assert not out.exists()  # refused before any work
    with pytest.raises(EngineError, match=f"text column 'body' is {shown}"):
        engine.run(path, out, text_col="body", progress=False)
    with pytest.raises(EngineError, match=f"^input: text column 'body' is {shown}"):  # an Arrow table in memory
        engine.extract(pa.table({"id": ["a", "b"], "body": text}), text_col="body")


def test_text_columns_that_hold_strings_still_run_row_by_row(tmp_path, bundle, engine):
    """Dictionary-encoded strings (pandas categoricals) run; an all-null column (Arrow type
    null) and null, empty or too long rows are per-row failures, as before."""
    texts = pa.array(["Bob lives in Paris.", None, "", "Alice " * 40]).dictionary_encode()
    path = tmp_path / "dict.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3, 4], "text": texts}), path)
    assert pq.read_schema(path).field("text").type == pa.dictionary(pa.int32(), pa.string())
    s = Engine.load(bundle, device="cpu", threads=1, max_doc_chars=100).run(path, tmp_path / "o1", progress=False)
    assert (s["documents_written"], s["failure_reasons"]) == (1, {"empty text": 1, "null text": 1, "text too long": 1})
    assert s["entities"] > 0
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"id": [1, 2], "text": pa.nulls(2)}), nulls)
    code, output = cli(str(nulls), "--model", str(bundle), "--out", str(tmp_path / "o2"))
    assert code == 3 and "all 2 documents failed (null text: 2)" in output


# ---------------------------------------------------------------- empty input
def test_empty_input_writes_each_table_schema_and_a_summary(tmp_path, bundle, engine):
    empty = [tmp_path / "e1.parquet", tmp_path / "e2.parquet"]
    for p in empty:
        pq.write_table(pa.table({"id": pa.array([], pa.int64()), "text": pa.array([], pa.string())}), p)
    out = tmp_path / "out"
    code, output = cli(*map(str, empty), "--model", str(bundle), "--out", str(out))
    assert code == 0, output
    assert "documents: 0 read, 0 written, 0 failed" in output
    expected = {"entities": entity_schema(pa.int64()), "relations": relation_schema(pa.int64()),
                "failures": failure_schema(pa.int64())}
    con = duckdb.connect()
    for table in TABLES:
        parts = sorted((out / table).iterdir())
        assert [p.name for p in parts] == ["part-00000.parquet"]
        t = pq.read_table(parts[0])
        assert t.num_rows == 0 and t.schema.equals(expected[table])
        assert con.sql(f"select count(*) from read_parquet('{out}/{table}/*.parquet')").fetchall() == [(0,)]
        names = [row[0] for row in con.sql(f"describe select * from read_parquet('{out}/{table}/*.parquet')").fetchall()]
        assert names == expected[table].names
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["documents_read"], summary["entities"], summary["parts"]) == (0, 0, 1)
    assert json.loads((out / "progress.json").read_text())["complete"]
    assert sorted(p.name for p in out.iterdir()) == ["entities", "failures", "progress.json", "relations",
                                                     "summary.json"]  # no lock file left behind
    code, output = cli(*map(str, empty), "--model", str(bundle), "--out", str(out), "--resume")
    assert code == 0 and "0 documents this run" in output
    s = engine.run(empty[0], tmp_path / "api", progress=False)  # the Python API, too
    assert s["documents_read"] == 0 and read_parts(tmp_path / "api", "relations").schema.equals(expected["relations"])


# ---------------------------------------------------------------- every row failed
def test_run_where_every_row_failed_exits_non_zero_and_still_writes(tmp_path, bundle, engine):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": [None, "  ", ""]}), path)
    out = tmp_path / "out"
    code, output = cli(str(path), "--model", str(bundle), "--out", str(out))
    assert code == 3, output
    assert "documents: 3 read, 0 written, 3 failed" in output  # the summary is printed first
    assert output.strip().splitlines()[-1] == (
        f"Error: all 3 documents failed (blank text: 1, empty text: 1, null text: 1); see {out / 'failures'}")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["documents_failed"] == 3 and read_parts(out, "failures").num_rows == 3
    assert read_parts(out, "entities").num_rows == 0
    code, _ = cli(str(path), "--model", str(bundle), "--out", str(out), "--resume")
    assert code == 3  # the same verdict when a finished run is resumed
    assert engine.run(path, tmp_path / "api", progress=False)["documents_failed"] == 3  # the API returns
    good = short_corpus(tmp_path / "good.parquet", 3)
    code, output = cli(str(good), str(path), "--model", str(bundle), "--out", str(tmp_path / "mixed"))
    assert code == 0 and "3 written, 3 failed" in output
    help_text = CliRunner().invoke(main, ["extract", "--help"]).output
    assert "3 when every document failed" in help_text


# ---------------------------------------------------------------- one run per --out
def test_folder_lock_excludes_a_second_holder_and_cleans_up(tmp_path):
    first = FolderLock.acquire(tmp_path)
    assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
    with pytest.raises(EngineError, match=f"output folder {tmp_path} is in use by another run \\(process {os.getpid()}\\)"):
        FolderLock.acquire(tmp_path)  # another open file: refused even inside one process
    first.release()
    first.release()
    assert not (tmp_path / LOCK_NAME).exists()
    with FolderLock.acquire(tmp_path) as again:
        assert again.held
    assert not again.held and not (tmp_path / LOCK_NAME).exists()


HOLD = ("import sys, time; from pathlib import Path; from nere.engine.lock import FolderLock; "
        "lock = FolderLock.acquire(Path(sys.argv[1])); print('locked', flush=True); time.sleep(120)")


def test_a_second_run_on_the_same_out_is_refused(tmp_path, bundle, engine):
    corpus = short_corpus(tmp_path / "c.parquet", 20)
    out = tmp_path / "out"
    args = [str(corpus), "--model", str(bundle), "--out", str(out)]
    assert cli(*args)[0] == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for extra in ([], ["--resume"], ["--overwrite"]):
            code, output = cli(*args, *extra)
            assert code == 1 and output.strip() == (
                f"Error: output folder {out} is in use by another run (process {holder.pid}); "
                "wait for it to end, or choose another --out"), output
        with pytest.raises(EngineError, match="is in use by another run"):
            engine.run(corpus, out, overwrite=True, progress=False)
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != LOCK_NAME} == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    code, output = cli(*args, "--overwrite")  # the kernel dropped the killed holder's lock
    assert code == 0, output
    assert not (out / LOCK_NAME).exists()


def _parts_done(out: Path) -> int:
    try:
        return len(json.loads((out / "progress.json").read_text())["parts"])
    except (OSError, ValueError):
        return 0


def test_sigkill_mid_run_leaves_no_stuck_lock_and_resume_is_exactly_once(tmp_path, bundle):
    n = 3000
    corpus = short_corpus(tmp_path / "c.parquet", n)
    out = tmp_path / "out"
    args = [str(corpus), "--model", str(bundle), "--out", str(out), "--part-docs", "200", "--threads", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "nere.cli", "extract", *args, "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while proc.poll() is None and _parts_done(out) < 1:
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGSTOP)  # hold it mid-run, lock held, while the second run tries
        assert proc.poll() is None, "the run finished before it could be stopped; the test proved nothing"
        code, output = cli(*args, "--resume")
        assert code == 1 and f"output folder {out} is in use by another run (process {proc.pid})" in output
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    progress = json.loads((out / "progress.json").read_text())
    assert not progress["complete"] and 1 <= len(progress["parts"]) < n // 200
    assert (out / LOCK_NAME).exists()  # the file stays, but no process holds it
    FolderLock.acquire(out).release()
    code, output = cli(*args, "--resume")
    assert code == 0, output
    assert f"{n - sum(p['documents'] for p in progress['parts']):,} documents this run" in output
    entities = read_parts(out, "entities")
    keys = list(zip(entities["doc_id"].to_pylist(), entities["entity_id"].to_pylist()))
    assert len(keys) == len(set(keys))  # no document written twice
    assert set(entities["doc_id"].to_pylist()) == {f"d{i:05d}" for i in range(n)}  # and none missing
    assert read_parts(out, "failures").num_rows == 0
    final = json.loads((out / "progress.json").read_text())
    ranges = sorted((a, b) for p in final["parts"] for _, a, b in p["ranges"])
    assert ranges[0][0] == 0 and ranges[-1][1] == n and all(x[1] == y[0] for x, y in zip(ranges, ranges[1:]))
    assert not (out / LOCK_NAME).exists()
