"""The engine on a local two-node Ray cluster: same rows as one machine, exactly once
when a worker node or the driver dies, hostile rows counted in failures/."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from fixtures_bundles import make_bundle
from test_engine_run import write_corpus

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402
from ray.data.expressions import col  # noqa: E402

from nere.cli import main  # noqa: E402
from nere.engine.api import Engine  # noqa: E402
from nere.engine.cluster.blocks import BLOCKS  # noqa: E402
from nere.engine.cluster.ray_data import extract_dataset, extract_nested  # noqa: E402
from nere.engine.cluster.ray_run import run_on_ray  # noqa: E402

pytestmark = pytest.mark.slow
TABLES = ("entities", "relations", "failures")
KEYS = {"entities": ["doc_id", "entity_id"], "relations": ["doc_id", "head_id", "tail_id"],
        "failures": ["source", "row"]}


@pytest.fixture(scope="module")
def cluster():
    """A head and one worker node, one logical CPU each (shared by the module: start-up is slow)."""
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address)
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("b") / "joint", task="joint", typed=True)


def read_sorted(out: Path, table: str) -> pa.Table:
    files = sorted((out / table).glob("part-*.parquet"))
    t = pa.concat_tables([pq.read_table(f) for f in files])
    return t.sort_by([(k, "ascending") for k in KEYS[table]])


def assert_same_rows(a: Path, b: Path) -> None:
    for t in TABLES:
        x, y = read_sorted(a, t), read_sorted(b, t)
        assert x.schema == y.schema, t
        assert x.to_pylist() == y.to_pylist(), t


def assert_exactly_once(out: Path, ids: set[str]) -> None:
    entities, failures = read_sorted(out, "entities"), read_sorted(out, "failures")
    keys = list(zip(entities["doc_id"].to_pylist(), entities["entity_id"].to_pylist()))
    assert len(keys) == len(set(keys)), "a document's entities appear twice"
    assert len(failures) == len(set(failures["doc_id"].to_pylist()))
    assert set(entities["doc_id"].to_pylist()) | set(failures["doc_id"].to_pylist()) == ids


def test_ray_cli_equals_single_machine_with_hostile_rows(tmp_path, cluster, bundle):
    corpus = write_corpus(tmp_path / "c.parquet", 1200, row_group_size=250)  # null and blank texts
    pq.write_table(pa.table({"id": ["h-0", "h-1", "h-2", "h-3"], "text": ["", None, "Alice works for Acme.", "\x00"]}),
                   tmp_path / "hostile-a.parquet")
    pq.write_table(pa.table({"id": ["h-4", "h-5", "h-6"], "text": [10, None, 30]}), tmp_path / "hostile-b.parquet")
    inputs = [str(corpus), str(tmp_path / "hostile-a.parquet")]
    single = tmp_path / "single"
    Engine.load(bundle, device="cpu", threads=1).run(inputs, single, progress=False)
    res = CliRunner().invoke(main, ["extract", *inputs, "--model", str(bundle), "--out", str(tmp_path / "ray"),
                                    "--ray", cluster.address, "--actors", "2", "--threads", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert_same_rows(tmp_path / "ray", single)
    s, r = (json.loads((d / "summary.json").read_text()) for d in (single, tmp_path / "ray"))
    for key in ("documents_read", "documents_written", "documents_failed", "failure_reasons", "entities", "relations"):
        assert r[key] == s[key], key
    assert r["failure_reasons"]["empty text"] >= 1
    assert r["ray"]["blocks"] == 2  # one per input file: each holds less than a block (10,000 rows)
    assert "documents: 1,204 read" in res.output
    # a text column that is not text is a bad file, refused in one line by both runs
    bad = [*inputs, str(tmp_path / "hostile-b.parquet")]
    for extra in ([], ["--ray", cluster.address, "--actors", "1", "--threads", "1"]):
        res = CliRunner().invoke(main, ["extract", *bad, "--model", str(bundle), "--out", str(tmp_path / "bad"),
                                        "--no-progress", "--overwrite", *extra])
        assert res.exit_code == 1 and "text column 'text' is int64, not string" in res.output, res.output


def test_extract_dataset_matches_engine_extract(cluster, bundle):
    from test_engine_run import corpus_texts

    table = pa.table({"id": [f"d{i}" for i in range(300)], "text": corpus_texts(300)})
    entities, relations = extract_dataset(ray.data.from_arrow(table), bundle, actors=1, threads=1, batch_docs=64)
    want_e, want_r = Engine.load(bundle, device="cpu", threads=1).extract(table)
    for got, want, keys in ((entities, want_e, KEYS["entities"]), (relations, want_r, KEYS["relations"])):
        got = pa.concat_tables(list(got.iter_batches(batch_format="pyarrow")))
        order = [(k, "ascending") for k in keys]
        assert got.sort_by(order).to_pylist() == want.sort_by(order).to_pylist()
    failed = extract_nested(ray.data.from_arrow(table), bundle, threads=1).filter(expr=col("failure").is_not_null())
    assert failed.count() == sum(1 for t in corpus_texts(300) if t is None or not t.strip())


def test_unreadable_rows_fail_in_one_line_and_keep_committed_blocks(tmp_path, cluster, bundle):
    good = write_corpus(tmp_path / "a.parquet", 300)
    bad = write_corpus(tmp_path / "b.parquet", 3000, start=300, row_group_size=1000)
    col = pq.ParquetFile(bad).metadata.row_group(2).column(1)
    data = bytearray(bad.read_bytes())
    pos = (col.dictionary_page_offset or col.data_page_offset) + 200
    data[pos : pos + 32] = bytes(b ^ 0xFF for b in data[pos : pos + 32])
    bad.write_bytes(bytes(data))
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["extract", str(good), str(bad), "--model", str(bundle), "--out", str(out),
                                    "--ray", "auto", "--actors", "1", "--threads", "1", "--no-progress"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"input {bad}: cannot read rows 0-3000" in res.output and "rerun with --resume" in res.output
    committed = {p.name for p in (out / BLOCKS).iterdir()} if out.exists() else set()
    assert committed <= {"part-00000-000000000000.parquet.json"} and not (out / "summary.json").exists()


def _records(out: Path) -> list[dict]:
    records = []
    for p in sorted((out / BLOCKS).glob("*.json")):
        try:
            records.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            pass
    return records


def test_driver_killed_then_resume_is_exactly_once(tmp_path, cluster, bundle):
    corpus = write_corpus(tmp_path / "c.parquet", 3000, row_group_size=100)
    out = tmp_path / "out"
    driver = ("import ray, sys; from nere.engine.cluster.ray_run import run_on_ray; ray.init(address=sys.argv[4]); "
              "run_on_ray([sys.argv[1]], sys.argv[2], sys.argv[3], actors=2, threads=1, block_docs=100, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", driver, str(corpus), str(out), str(bundle), cluster.address],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while proc.poll() is None and len(_records(out)) < 3 and time.time() < deadline:
        time.sleep(0.01)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert killed, "the driver finished before it could be killed; the test proved nothing"
    assert 0 < len(_records(out)) < 30
    summary = run_on_ray([corpus], out, bundle, actors=2, threads=1, resume=True, progress=False, block_docs=100)
    assert summary["resumed"] and summary["documents_before_resume"] > 0
    assert summary["documents_read"] == 3000 and summary["parts"] == 30
    assert_exactly_once(out, {f"doc-{i:05d}" for i in range(3000)})
    single = tmp_path / "single"
    Engine.load(bundle, device="cpu", threads=1).run([corpus], single, progress=False)
    assert_same_rows(out, single)


def test_worker_node_killed_mid_run_is_exactly_once(tmp_path, cluster, bundle):
    """Runs last: it takes a node away. A spare node lets the lost actor restart."""
    spare = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    corpus = write_corpus(tmp_path / "c.parquet", 4000, row_group_size=100)
    out = tmp_path / "out"
    head = ray.get_runtime_context().get_node_id()
    outcome: dict = {}

    def job() -> None:
        try:
            outcome["summary"] = run_on_ray([corpus], out, bundle, actors=2, threads=1, block_docs=100,
                                            progress=False)
        except Exception as err:  # noqa: BLE001 - the resume below must complete it
            outcome["error"] = err

    thread = threading.Thread(target=job)
    thread.start()
    victim, deadline = None, time.time() + 120
    while victim is None and thread.is_alive() and time.time() < deadline:
        nodes = {r["engine"].get("node") for r in _records(out)} - {head}
        victim = next((n for n in cluster.worker_nodes if n.node_id in nodes), None)
        time.sleep(0.01)
    assert victim is not None, ("no block ran on a worker node before the run ended", outcome.get("error"),
                                {r["engine"].get("node") for r in _records(out)}, head,
                                [n.node_id for n in cluster.worker_nodes])
    done_at_kill = len(_records(out))
    cluster.remove_node(victim, allow_graceful=False)
    thread.join(timeout=240)
    assert not thread.is_alive(), "the run hung after losing a node"
    assert done_at_kill < 40, "the run finished before the node was killed; the test proved nothing"
    print(f"node killed after {done_at_kill}/40 blocks; the run itself "
          + (f"failed ({outcome['error']!r}); resumed" if "error" in outcome else "completed"))
    if "error" in outcome:  # the job may fail; --resume must then complete it
        outcome["summary"] = run_on_ray([corpus], out, bundle, actors=1, threads=1, block_docs=100, resume=True,
                                        progress=False)
    assert outcome["summary"]["documents_read"] == 4000
    assert_exactly_once(out, {f"doc-{i:05d}" for i in range(4000)})
    assert len(list((out / "entities").iterdir())) == 40  # no temporary file left behind
    del spare


def test_ray_run_refuses_an_out_folder_another_run_holds(tmp_path, cluster, bundle):
    from nere.engine.lock import FolderLock

    corpus = write_corpus(tmp_path / "c.parquet", 50, row_group_size=25)
    out = tmp_path / "ray"
    out.mkdir()
    held = FolderLock.acquire(out)
    try:
        res = CliRunner().invoke(main, ["extract", str(corpus), "--model", str(bundle), "--out", str(out),
                                        "--ray", cluster.address, "--actors", "1", "--threads", "1", "--no-progress"])
        assert res.exit_code == 1 and "in use by another run" in res.output, res.output
    finally:
        held.release()
    res = CliRunner().invoke(main, ["extract", str(corpus), "--model", str(bundle), "--out", str(out),
                                    "--ray", cluster.address, "--actors", "1", "--threads", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert not (out / ".nere.lock").exists()
