"""A Spark recipe: the engine in ``DataFrame.mapInArrow`` (``pip install 'nere[spark]'``).

    from nere.engine.cluster.spark import extract_dataframes
    docs = spark.read.parquet("s3://bucket/corpus/")               # columns id, text
    entities, relations = extract_dataframes(docs, "bundles/conll04-joint")
    entities.write.parquet("s3://bucket/entities/")

Every executor's Python worker builds the engine once (Spark reuses Python workers,
``spark.python.worker.reuse``, on by default) and turns each Arrow batch of its partition
into one nested row per document; Spark's ``explode`` then cuts the flat tables, whose
columns and types are those of :mod:`nere.engine.tables`. The bundle folder must be on
every executor (a shared path, or shipped with ``SparkContext.addFile``).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_type
from pyspark.sql.types import StructType

from nere.engine.cluster.batches import FAILURE, BatchExtractor, nested_schema
from nere.engine.errors import EngineError


def spark_schema(id_type: pa.DataType) -> StructType:
    """The nested rows' Spark schema for ids of Arrow type ``id_type``."""
    return from_arrow_schema(nested_schema(id_type))


def partition_extractor(bundle: str, re_bundle: str | None = None, id_col: str = "id", text_col: str = "text",
                        **engine_options: Any) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The function to give ``mapInArrow``: Arrow batches of (id, text) in, nested rows out
    (:func:`spark_schema`). ``engine_options``: ``Engine.load`` keywords; ``threads``
    defaults to 1, one core per Spark task (raise it with ``spark.task.cpus``)."""
    bundle, re_bundle = str(bundle), None if re_bundle is None else str(re_bundle)
    engine_options = {"threads": 1, **engine_options}

    def extract_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        extractor = BatchExtractor(bundle, re_bundle, id_col, text_col, **engine_options)  # once per process
        for batch in batches:
            yield from extractor.nested(batch).to_batches()

    return extract_partition


def nested_dataframe(df: DataFrame, bundle: str, re_bundle: str | None = None, *, id_col: str = "id",
                     text_col: str = "text", **engine_options: Any) -> DataFrame:
    """One row per document: doc_id, entities, relations (arrays of structs) and ``failure``."""
    for col in (id_col, text_col):
        if col not in df.columns:
            raise EngineError(f"input DataFrame has no column {col!r} (it has {', '.join(df.columns)})")
    id_type = to_arrow_type(df.schema[id_col].dataType)
    return df.select(id_col, text_col).mapInArrow(
        partition_extractor(bundle, re_bundle, id_col, text_col, **engine_options), spark_schema(id_type))


def extract_dataframes(df: DataFrame, bundle: str, re_bundle: str | None = None, *, cache: bool = True,
                       **options: Any) -> tuple[DataFrame, DataFrame]:
    """(entities, relations) DataFrames with the columns of :mod:`nere.engine.tables`.

    ``cache``: keep the nested rows so the models run once for both tables (otherwise once
    per table computed). Failed rows are left out, as in ``Engine.extract``; read them with
    ``nested_dataframe(...).where("failure is not null")``. ``options``: those of
    :func:`nested_dataframe`."""
    nested = nested_dataframe(df, bundle, re_bundle, **options)
    if cache:
        nested = nested.cache()
    return tuple(nested.select("doc_id", F.explode(table).alias("row")).select("doc_id", "row.*")  # type: ignore
                 for table in ("entities", "relations"))


__all__ = ["FAILURE", "extract_dataframes", "nested_dataframe", "partition_extractor", "spark_schema"]
