"""The engine's output tables (the schema users query; documented in docs/engine.md).

``doc_id`` keeps the Arrow type of the input id column, so results join back to the
corpus without casts. Spans are character offsets into the input text, end exclusive.
"""
from __future__ import annotations

import pyarrow as pa


def entity_schema(id_type: pa.DataType) -> pa.Schema:
    return pa.schema([
        ("doc_id", id_type),
        ("entity_id", pa.int32()),  # per document, in text order
        ("start", pa.int32()),
        ("end", pa.int32()),
        ("text", pa.string()),  # == input_text[start:end]
        ("label", pa.string()),
        ("score", pa.float32()),
        ("sentence_index", pa.int32()),
    ])


def relation_schema(id_type: pa.DataType) -> pa.Schema:
    return pa.schema([
        ("doc_id", id_type),
        ("head_id", pa.int32()),  # entity_id of the head in the same document
        ("tail_id", pa.int32()),
        ("head_text", pa.string()),
        ("tail_text", pa.string()),
        ("label", pa.string()),
        ("score", pa.float32()),
    ])


def failure_schema(id_type: pa.DataType) -> pa.Schema:
    return pa.schema([
        ("doc_id", id_type),
        ("source", pa.string()),  # input file (or "<table>" for the Python API)
        ("row", pa.int64()),  # row number in that source, from 0
        ("reason", pa.string()),
    ])


def build(schema: pa.Schema, ids: pa.Array, doc_rows: list[int], columns: dict[str, list]) -> pa.Table:
    """A table of ``schema``: doc_id taken from ``ids`` at ``doc_rows``, other columns as given."""
    arrays = [ids.take(pa.array(doc_rows, pa.int64())).cast(schema.field("doc_id").type)]
    for f in schema:
        if f.name != "doc_id":
            arrays.append(pa.array(columns[f.name], type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)
