"""NERE runtime engine: runs exported ONNX bundles over text and Parquet corpora.

Importing this package never imports torch: ETL jobs install only numpy, pyarrow,
tokenizers and onnxruntime. Shared concepts (spans, tag schemes, Viterbi, metrics,
featurization) live in :mod:`nere.engine.core` so training uses the very same code.
"""
