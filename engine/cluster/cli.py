"""The ``--ray`` branch of ``nere extract``: options in, :func:`run_on_ray` out."""
from __future__ import annotations

from typing import Any, Sequence

from nere.engine.config import EngineConfig
from nere.engine.errors import EngineError


def run_from_cli(address: str | None, actors: int | None, inputs: Sequence[str], model: str, re_model: str | None,
                 out: str, id_col: str, text_col: str, config: EngineConfig, resume: bool, overwrite: bool,
                 limit: int | None, progress: bool) -> dict[str, Any]:
    """``config.threads``: per actor. ``--actors`` alone means ``--ray auto``."""
    try:
        from nere.engine.cluster.ray_run import run_on_ray
    except ImportError as err:
        if (err.name or "").split(".")[0] != "ray":
            raise
        raise EngineError("--ray needs Ray Data: pip install 'nere[ray]'") from None
    return run_on_ray(list(inputs), out, model, re_model, address=address or "auto", actors=actors, id_col=id_col,
                      text_col=text_col, resume=resume, overwrite=overwrite, limit=limit, progress=progress,
                      device=config.device, threads=config.threads, max_doc_chars=config.max_doc_chars,
                      batch_tokens=config.batch_tokens, streams=config.streams, re_streams=config.re_streams,
                      line_breaks=config.line_breaks, tune_allocator=config.tune_allocator)
