"""Build a benchmark corpus (Parquet, columns ``id`` int64 and ``text``) of any size by
repeating real documents, so throughput and memory can be measured at 10k or 200k rows
without shipping a large file.

Sources:
- a dataset split (default ``conll04:test``): its sentences are shuffled and grouped into
  documents of a few sentences each; every pass over the split uses a new shuffle, so
  documents differ while their sentences stay real text;
- a Parquet file (e.g. artifacts/sample_corpus.parquet): its texts are repeated in order.

    python scripts/make_corpus.py --docs 10000 --out runs/corpus/conll04-10k.parquet
    python scripts/make_corpus.py --source artifacts/sample_corpus.parquet --docs 200000 --out runs/corpus/s200k.parquet

Rows are written in row groups as they are made: memory stays small at any size.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP = 10_000
SCHEMA = pa.schema([("id", pa.int64()), ("text", pa.string())])


def dataset_sentences(spec: str, data_dir: str | None = None) -> list[str]:
    """Sentence texts of ``name:split`` (e.g. ``conll04:test``) via the dataset loaders."""
    from nere.train.datasets import load_dataset

    name, _, split = spec.partition(":")
    return [ex.text for ex in load_dataset(name, split or "test", data_dir=data_dir)]


def parquet_texts(path: str | Path, text_col: str = "text") -> list[str]:
    """Non-empty string texts of a Parquet file's ``text_col``."""
    table = pq.read_table(path, columns=[text_col])
    return [t for t in table.column(text_col).to_pylist() if isinstance(t, str) and t.strip()]


def grouped_documents(sentences: Sequence[str], per_doc: tuple[int, int], seed: int) -> Iterator[str]:
    """Endless documents of ``per_doc[0]..per_doc[1]`` sentences joined by a space; each
    pass over the sentences is a new shuffle."""
    if not sentences:
        raise ValueError("no sentences to build documents from")
    rng = random.Random(seed)
    while True:
        order = list(sentences)
        rng.shuffle(order)
        i = 0
        while i < len(order):
            k = rng.randint(per_doc[0], per_doc[1])
            yield " ".join(order[i : i + k])
            i += k


def repeated_documents(texts: Sequence[str]) -> Iterator[str]:
    if not texts:
        raise ValueError("the source has no non-empty texts")
    while True:
        yield from texts


def write_corpus(documents: Iterator[str], n_docs: int, out: str | Path, row_group: int = ROW_GROUP) -> dict:
    """The first ``n_docs`` documents as rows (id 0..n-1, text) of ``out``; returns counts."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    chars = 0
    with pq.ParquetWriter(tmp, SCHEMA) as writer:
        for lo in range(0, n_docs, row_group):
            hi = min(n_docs, lo + row_group)
            texts = [next(documents) for _ in range(lo, hi)]
            chars += sum(map(len, texts))
            writer.write_table(pa.table({"id": pa.array(range(lo, hi), pa.int64()), "text": texts}, schema=SCHEMA))
    tmp.replace(out)
    return {"path": str(out), "documents": n_docs, "characters": chars, "bytes": out.stat().st_size}


def _per_doc(value: str) -> tuple[int, int]:
    lo, _, hi = value.partition("-")
    try:
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sentences-per-doc {value!r}: give N or MIN-MAX") from None
    if not 1 <= a <= b:
        raise argparse.ArgumentTypeError(f"--sentences-per-doc {value!r}: need 1 <= MIN <= MAX")
    return a, b


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, required=True, help="Number of documents to write.")
    p.add_argument("--out", required=True, help="Parquet file to write (keep it under runs/, which git ignores).")
    p.add_argument("--source", default="conll04:test",
                   help="DATASET:SPLIT (sentences grouped into documents) or a .parquet file (texts repeated).")
    p.add_argument("--text-col", default="text", help="Text column of a Parquet source.")
    p.add_argument("--sentences-per-doc", type=_per_doc, default=(2, 5), metavar="MIN-MAX",
                   help="Sentences per document for a dataset source (default 2-5).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="Dataset folder (default: the dataset helpers' lookup).")
    args = p.parse_args(argv)
    if args.docs < 1:
        p.error(f"--docs must be positive, got {args.docs}")
    try:
        if args.source.endswith(".parquet") or Path(args.source).is_file():
            docs = repeated_documents(parquet_texts(args.source, args.text_col))
        else:
            docs = grouped_documents(dataset_sentences(args.source, args.data_dir), args.sentences_per_doc, args.seed)
        info = write_corpus(docs, args.docs, args.out)
    except (ValueError, OSError, KeyError, pa.ArrowException) as err:
        print(f"make_corpus: {args.source}: {err}", file=sys.stderr)
        return 1
    print(f"{info['path']}: {info['documents']:,} documents, {info['characters']:,} characters, "
          f"{info['bytes'] / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
