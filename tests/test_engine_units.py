"""How inputs are cut into units: small first and last units, as a refinement of the plain cut."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fixtures_bundles import make_bundle
from nere.engine.api import UNIT_DOCS, Engine
from nere.engine.parquet_io import EDGE_DOCS, edge_cuts, iter_units, open_inputs, resolve_inputs


def write(path: Path, n: int, start: int = 0) -> Path:
    ids = [f"d{i:05d}" for i in range(start, start + n)]
    texts = [f"alice smith met bob {i} in paris ." for i in range(start, start + n)]
    pq.write_table(pa.table({"id": ids, "text": texts}), path)
    return path


def cuts(files: list[Path], unit_docs: int, edge_docs: int, limit: int | None = None) -> list[tuple[int, int, int]]:
    """(file index, first row, end row) of each unit."""
    inputs = open_inputs(resolve_inputs(files), "id", "text")
    return [(fi, u.row0, u.row0 + len(u.texts))
            for fi, u in iter_units(inputs, "id", "text", unit_docs, 10**9, limit, edge_docs=edge_docs)]


def test_edge_cuts_split_only_ranges_longer_than_the_edge():
    assert edge_cuts([(0, 10), (10, 20)], 3, 4) == [(0, 3), (3, 10), (10, 16), (16, 20)]
    assert edge_cuts([(0, 10)], 3, 4) == [(0, 3), (3, 6), (6, 10)]
    assert edge_cuts([(0, 3), (3, 7)], 3, 4) == [(0, 3), (3, 7)]
    assert edge_cuts([(5, 9)], 0, 0) == [(5, 9)] and edge_cuts([], 3, 4) == []


@pytest.mark.parametrize("limit", [None, 130, 61])
def test_first_and_last_unit_are_small_and_refine_the_plain_cut(tmp_path, limit):
    files = [write(tmp_path / "a.parquet", 70), write(tmp_path / "b.parquet", 90, start=70)]
    plain, edged = cuts(files, 25, 0, limit), cuts(files, 25, 4, limit)
    last = (1, 0, 60) if limit == 130 else (0, 0, 61) if limit == 61 else (1, 0, 90)
    assert plain[0][1] == 0 and (plain[-1][0], plain[-1][2]) == (last[0], last[2])
    assert edged[0] == (0, 0, 4) and edged[-1] == (last[0], last[2] - 4, last[2])
    assert len(edged) == len(plain) + 2
    for f, a, b in edged:  # each new unit lies inside one old unit: an old progress record resumes exactly
        assert sum(1 for g, c, d in plain if g == f and c <= a and b <= d) == 1
    for table in (plain, edged):  # every row once, in order
        rows = [(f, r) for f, a, b in table for r in range(a, b)]
        assert rows == sorted(set(rows)) and len(rows) == (limit or 160)


def test_an_input_of_one_unit_is_not_cut(tmp_path):
    files = [write(tmp_path / "a.parquet", 20)]
    assert cuts(files, 25, 4) == [(0, 0, 20)]


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    return Engine.load(make_bundle(tmp_path_factory.mktemp("b") / "ner"), device="cpu", threads=1)


def test_in_memory_inputs_are_cut_like_files(engine):
    n = UNIT_DOCS + 300
    texts = [f"alice smith {i}" for i in range(n)]
    sizes = [len(u.texts) for u in engine._units(texts, "id", "text")]
    assert sizes == [EDGE_DOCS, UNIT_DOCS - EDGE_DOCS, 300 - EDGE_DOCS, EDGE_DOCS]
    table = pa.table({"id": list(range(n)), "text": texts})
    batches = table.to_batches(max_chunksize=500)
    sizes = [len(u.texts) for u in engine._units(batches, "id", "text")]
    assert sizes == [EDGE_DOCS, 500 - EDGE_DOCS, 500, 324 - EDGE_DOCS, EDGE_DOCS]
    assert [len(u.texts) for u in engine._units(texts[:UNIT_DOCS], "id", "text")] == [UNIT_DOCS]
    assert [len(u.texts) for u in engine._units(table.slice(0, 50).to_batches(10), "id", "text")] == [10] * 5
    whole = engine.extract(table)[0]
    assert engine.extract(texts)[0].column("text").equals(whole.column("text"))
    assert engine.extract(batches)[0].equals(whole)
    assert whole.column("doc_id").unique().to_pylist() == list(range(n))  # every document, in order


def test_a_run_cut_without_edges_resumes_with_them_exactly_once(tmp_path, engine):
    """A progress record written with the plain cut (an earlier version) resumes under the new one."""
    import nere.engine.api as api

    files = [write(tmp_path / "a.parquet", 2600), write(tmp_path / "b.parquet", 700, start=2600)]
    ref = tmp_path / "ref"
    engine = Engine(engine.bundle, threads=1, part_docs=1)
    engine.run(files, ref, progress=False)
    out = tmp_path / "out"
    plain = api.iter_units
    api.iter_units = lambda *a, **k: plain(*a, **{**k, "edge_docs": 0})
    try:
        engine.run(files, out, progress=False)
    finally:
        api.iter_units = plain
    progress = json.loads((out / "progress.json").read_text())
    assert [r for p in progress["parts"] for r in p["ranges"]][:2] == [[0, 0, 1024], [0, 1024, 2048]]
    progress["parts"] = progress["parts"][:2]  # as if killed after two parts
    progress["complete"] = False
    (out / "progress.json").write_text(json.dumps(progress))
    summary = engine.run(files, out, progress=False, resume=True)
    assert summary["documents_read"] == 3300
    for table in ("entities", "failures"):
        got = pa.concat_tables(pq.read_table(p) for p in sorted((out / table).glob("part-*.parquet")))
        want = pa.concat_tables(pq.read_table(p) for p in sorted((ref / table).glob("part-*.parquet")))
        assert got.equals(want)
