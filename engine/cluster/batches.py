"""One Arrow batch of (id, text) rows through the engine, as a cluster worker sees it.

Workers of Ray and Spark call :class:`BatchExtractor` on batch after batch; the engine
(ONNX sessions, tokenizer) is built once per process and kept in :func:`cached_engine`.
Rows are handed to the engine under their position in the batch, so every output row
maps back to its input row even when ids repeat; ``doc_id`` is then taken from the
input's id column and keeps its Arrow type.

Two shapes come out: flat tables with the schemas of :mod:`nere.engine.tables` (what
``nere extract`` writes) and one nested row per document (:func:`nested_schema`), for
engines whose map step returns a single table (``mapInArrow``, ``map_batches``);
:func:`flatten` turns the nested form back into the flat tables.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nere.engine.errors import EngineError
from nere.engine.tables import entity_schema, failure_schema, relation_schema

ROW = "__nere_row"  # the engine's id while it runs: the row's position in the batch
NESTED = {"entities": entity_schema, "relations": relation_schema}
FAILURE = "failure"  # nested form: the reason a row failed, null when it did not

_ENGINES: dict[str, Any] = {}
_LOCK = threading.Lock()


def cached_engine(bundle: str, re_bundle: str | None = None, **options: Any):
    """The process's engine for these bundles and options, loaded on first use: a Ray
    actor or a reused Spark Python worker loads its bundle once, not once per batch."""
    key = json.dumps([str(bundle), None if re_bundle is None else str(re_bundle), options], sort_keys=True,
                     default=str)
    with _LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            from nere.engine.api import Engine

            engine = _ENGINES[key] = Engine.load(bundle, re_bundle, **options)
        return engine


@dataclass
class BatchResult:
    """The flat tables of one batch and its counts (documents, failed, cleaned, tokens)."""

    entities: pa.Table
    relations: pa.Table
    failures: pa.Table
    stats: dict[str, int]


def _column(table: pa.Table | pa.RecordBatch, name: str) -> pa.Array:
    if name not in table.schema.names:
        raise EngineError(f"input batch has no column {name!r} (it has {', '.join(table.schema.names)})")
    col = table.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _with_ids(table: pa.Table, ids: pa.Array, schema: pa.Schema) -> pa.Table:
    """``table`` (doc_id = row in batch) with doc_id replaced by the input ids of those rows."""
    doc_ids = ids.take(table.column(0).combine_chunks()).cast(schema.field("doc_id").type)
    return pa.Table.from_arrays([doc_ids, *table.columns[1:]], schema=schema)


class BatchExtractor:
    """Callable on a batch of rows; the engine is shared by every extractor of the process.

    ``engine_options`` are :meth:`Engine.load <nere.engine.api.Engine.load>` keywords
    (``device``, ``threads``, ``batch_tokens``, ``streams`` ...)."""

    def __init__(self, bundle: str, re_bundle: str | None = None, id_col: str = "id", text_col: str = "text",
                 **engine_options: Any) -> None:
        self.engine = cached_engine(bundle, re_bundle, **engine_options)
        self.id_col, self.text_col = id_col, text_col

    def _by_position(self, batch: pa.Table | pa.RecordBatch) -> tuple[pa.Array, Any]:
        """(input ids, the engine's extraction with doc_id = the row's position in the batch)."""
        ids, texts = _column(batch, self.id_col), _column(batch, self.text_col)
        rows = pa.array(np.arange(len(ids), dtype=np.int64))
        return ids, self.engine.extract_all(pa.table({ROW: rows, "text": texts}), id_col=ROW, text_col="text")

    def extract(self, batch: pa.Table | pa.RecordBatch, source: str = "<table>", row0: int = 0) -> BatchResult:
        """Flat tables of the batch; failure rows name ``source`` and ``row0`` + row in batch,
        as a single-machine run over that file names them."""
        ids, out = self._by_position(batch)
        id_type = ids.type
        f = out.failures
        failed_rows = f.column("doc_id").combine_chunks()
        failures = pa.Table.from_arrays(
            [ids.take(failed_rows).cast(id_type), pa.array([source] * f.num_rows, pa.string()),
             pc.add(failed_rows, pa.scalar(row0, pa.int64())), f.column("reason").combine_chunks()],
            schema=failure_schema(id_type))
        return BatchResult(_with_ids(out.entities, ids, entity_schema(id_type)),
                           _with_ids(out.relations, ids, relation_schema(id_type)), failures, dict(out.stats))

    def nested(self, batch: pa.Table | pa.RecordBatch) -> pa.Table:
        """One row per input row: doc_id, its entities, its relations, its failure reason."""
        ids, out = self._by_position(batch)
        n = len(ids)
        reasons: list[str | None] = [None] * n
        for r, why in zip(out.failures.column("doc_id").to_pylist(), out.failures.column("reason").to_pylist()):
            reasons[r] = why
        columns = [ids, _lists(out.entities, n), _lists(out.relations, n), pa.array(reasons, pa.string())]
        return pa.Table.from_arrays(columns, schema=nested_schema(ids.type))


def _lists(table: pa.Table, n: int) -> pa.ListArray:
    """The rows of ``table`` (doc_id = position in the batch) without doc_id, as one list
    per input row."""
    rows = table.column(0).to_numpy()  # ascending as the engine writes them; sorted if not
    if len(rows) > 1 and (np.diff(rows) < 0).any():  # keep each row's own order (a stable sort)
        table = table.take(pc.sort_indices(table, sort_keys=[("doc_id", "ascending")]))
        rows = table.column(0).to_numpy()
    counts = np.bincount(rows, minlength=n) if len(rows) else np.zeros(n, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    fields = table.schema.remove(0)
    values = pa.StructArray.from_arrays([table.column(i).combine_chunks() for i in range(1, table.num_columns)],
                                        fields=list(fields))
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def nested_schema(id_type: pa.DataType) -> pa.Schema:
    """One row per document: doc_id, entities and relations as lists of structs with the
    flat tables' columns (doc_id left out), and the failure reason (null for a good row)."""
    return pa.schema([
        ("doc_id", id_type),
        ("entities", pa.list_(pa.struct(list(entity_schema(id_type).remove(0))))),
        ("relations", pa.list_(pa.struct(list(relation_schema(id_type).remove(0))))),
        (FAILURE, pa.string()),
    ])


def flatten(nested: pa.Table | pa.RecordBatch, table: str) -> pa.Table:
    """The flat ``entities`` or ``relations`` table of nested rows (:func:`nested_schema`)."""
    if table not in NESTED:
        raise EngineError(f"no nested table {table!r}: choose entities or relations")
    lists = _column(nested, table)
    ids = _column(nested, "doc_id")
    parents = pc.list_parent_indices(lists)
    values = pc.list_flatten(lists)
    schema = NESTED[table](ids.type)
    return pa.Table.from_arrays([ids.take(parents), *values.flatten()], schema=schema)
