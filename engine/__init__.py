"""NERE runtime engine: runs exported ONNX bundles over text and Parquet corpora.

Importing this package never imports torch: ETL jobs install only numpy, pyarrow,
tokenizers and onnxruntime. Shared concepts (spans, tag schemes, Viterbi, metrics,
featurization) live in :mod:`nere.engine.core` so training uses the very same code.
"""

__all__ = ["Engine", "EngineConfig"]


def __getattr__(name: str):
    """``from nere.engine import Engine, EngineConfig`` without making ``nere.engine.core`` users (training)
    import onnxruntime and pyarrow."""
    if name == "Engine":
        from nere.engine.api import Engine

        return Engine
    if name == "EngineConfig":
        from nere.engine.config import EngineConfig

        return EngineConfig
    raise AttributeError(f"module 'nere.engine' has no attribute {name!r}")
