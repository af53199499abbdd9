"""The Spark mapInArrow recipe in local mode: the same rows as the engine, failures kept."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fixtures_bundles import make_bundle
from test_engine_run import write_corpus

pytest.importorskip("pyspark")
from pyspark.sql import SparkSession  # noqa: E402

from nere.engine.api import Engine  # noqa: E402
from nere.engine.cluster.spark import extract_dataframes, nested_dataframe  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spark():
    session = (SparkSession.builder.master("local[1]").appName("nere-test")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "1").getOrCreate())
    yield session
    session.stop()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("b") / "joint", task="joint", typed=True)


def test_map_in_arrow_gives_the_engines_rows(tmp_path, spark, bundle):
    corpus = write_corpus(tmp_path / "c.parquet", 400, row_group_size=150)  # null and blank texts among them
    df = spark.read.parquet(str(corpus)).repartition(2)
    entities, relations = extract_dataframes(df, str(bundle))
    want_e, want_r = Engine.load(bundle, device="cpu", threads=1).extract(pq.read_table(corpus))
    for got, want, keys in ((entities, want_e, ["doc_id", "entity_id"]),
                            (relations, want_r, ["doc_id", "head_id", "tail_id"])):
        got = got.toArrow()
        assert got.column_names == want.column_names and got.schema.types == want.schema.types
        order = [(k, "ascending") for k in keys]
        assert got.sort_by(order).to_pylist() == want.sort_by(order).to_pylist()
    failed = nested_dataframe(df, str(bundle)).where("failure is not null").toArrow()
    texts = pq.read_table(corpus).column("text").to_pylist()
    assert failed.num_rows == sum(1 for t in texts if t is None or not t.strip())
    assert set(failed.column("failure").to_pylist()) == {"null text", "blank text"}
