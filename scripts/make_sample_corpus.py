"""Build the shipped sample corpora from the datasets' test splits.

artifacts/sample_en.parquet: CoNLL04 test sentences, grouped 4 per document.
artifacts/sample_zh.parquet: MSRA test sentences, grouped 10 per document.
Columns: id (string), text (string), source (dataset and sentence range).

    python scripts/make_sample_corpus.py [--out artifacts]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nere.train.datasets import load_dataset


def documents(name: str, per_doc: int, joiner: str) -> pa.Table:
    sentences = [ex.text for ex in load_dataset(name, "test")]
    ids, texts, sources = [], [], []
    for k in range(0, len(sentences), per_doc):
        ids.append(f"{name}-test-{k // per_doc:05d}")
        texts.append(joiner.join(sentences[k : k + per_doc]))
        sources.append(f"{name} test sentences {k}-{min(k + per_doc, len(sentences)) - 1}")
    return pa.table({"id": ids, "text": texts, "source": sources})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="artifacts")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, per_doc, joiner, file in [("conll04", 4, " ", "sample_en.parquet"), ("msra", 10, "", "sample_zh.parquet")]:
        table = documents(name, per_doc, joiner)
        pq.write_table(table, out / file, compression="zstd")
        print(f"{out / file}: {table.num_rows} documents")


if __name__ == "__main__":
    main()
