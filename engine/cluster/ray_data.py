"""The engine inside Ray Data pipelines (``pip install 'nere[ray]'``).

    import ray
    from nere.engine.cluster.ray_data import extract_dataset
    docs = ray.data.read_parquet("s3://bucket/corpus/")            # columns id, text
    entities, relations = extract_dataset(docs, "bundles/conll04-joint", actors=8)
    entities.write_parquet("s3://bucket/entities/")

Each actor loads the bundle once (:class:`ExtractBatches`); a batch of rows becomes one
nested row per document, which :func:`extract_dataset` turns into the two flat tables.
"""
from __future__ import annotations

from typing import Any

import pyarrow as pa
from ray.data import ActorPoolStrategy, Dataset

from nere.engine.cluster.batches import BatchExtractor, flatten
from nere.engine.errors import EngineError

BATCH_DOCS = 1024  # documents per map_batches call: one engine unit


class ExtractBatches:
    """A ``Dataset.map_batches`` class: (id, text) rows in, one nested row per document out
    (:func:`nere.engine.cluster.batches.nested_schema`). Ray builds one per actor, so the
    bundle loads once per actor."""

    def __init__(self, bundle: str, re_bundle: str | None = None, id_col: str = "id", text_col: str = "text",
                 **engine_options: Any) -> None:
        self.extractor = BatchExtractor(bundle, re_bundle, id_col, text_col, **engine_options)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.extractor.nested(batch)


def actor_options(actors: int, device: str = "cpu", threads: int = 1, gpus_per_actor: float = 1.0) -> dict[str, Any]:
    """``map_batches`` keywords for a pool of ``actors`` actors, each holding ``threads``
    cores (on CPU the engine's threads; on CUDA room for tokenizing and decoding) and on
    CUDA ``gpus_per_actor`` of a GPU (below 1 to share a GPU between actors)."""
    if actors < 1:
        raise EngineError(f"actors must be positive, got {actors}")
    if device == "cuda":
        return {"compute": ActorPoolStrategy(size=actors), "num_gpus": gpus_per_actor, "num_cpus": threads}
    return {"compute": ActorPoolStrategy(size=actors), "num_cpus": threads}


def extract_nested(ds: Dataset, bundle: str, re_bundle: str | None = None, *, id_col: str = "id",
                   text_col: str = "text", actors: int = 1, device: str = "cpu", threads: int = 1,
                   gpus_per_actor: float = 1.0, batch_docs: int = BATCH_DOCS, **engine_options: Any) -> Dataset:
    """One row per document: doc_id, entities, relations (lists of structs) and ``failure``
    (the reason a row could not be processed; null otherwise). Lazy, like any Dataset."""
    engine_options = {"device": device, "threads": threads if device != "cuda" else None, **engine_options}
    return ds.map_batches(
        ExtractBatches,
        fn_constructor_kwargs={"bundle": str(bundle), "re_bundle": None if re_bundle is None else str(re_bundle),
                               "id_col": id_col, "text_col": text_col, **engine_options},
        batch_size=batch_docs,
        batch_format="pyarrow",
        **actor_options(actors, device, threads, gpus_per_actor),
    )


def extract_dataset(ds: Dataset, bundle: str, re_bundle: str | None = None, *, materialize: bool = True,
                    **options: Any) -> tuple[Dataset, Dataset]:
    """(entities, relations) Datasets with the schemas of :mod:`nere.engine.tables`.

    The models run once: the nested rows are materialized (in the object store) before
    both tables are cut from them; ``materialize=False`` keeps everything lazy and runs the
    models once per table consumed. Failed rows are left out, as in ``Engine.extract``;
    read them with ``extract_nested(...).filter(expr=col("failure").is_not_null())`` (``col`` from ``ray.data.expressions``).
    ``options``: those of :func:`extract_nested`."""
    nested = extract_nested(ds, bundle, re_bundle, **options)
    if materialize:
        nested = nested.materialize()
    return (nested.map_batches(flatten, fn_kwargs={"table": "entities"}, batch_format="pyarrow"),
            nested.map_batches(flatten, fn_kwargs={"table": "relations"}, batch_format="pyarrow"))


__all__ = ["ExtractBatches", "actor_options", "extract_dataset", "extract_nested"]
