"""``nere extract --ray``: the single-machine output folder, written by a Ray actor pool.

The driver reads only Parquet footers: it plans the blocks (:mod:`.blocks`), skips those
already committed, and hands the rest to a Ray Data actor pool (``map_batches`` with one
block per call). Each actor loads the bundle once, reads its blocks' rows itself and
commits their part files; the driver only counts commit records. Inputs and the output
folder must therefore be paths every node sees (a shared filesystem).

Failures: Ray Data restarts dead actors and retries their blocks, and re-runs blocks whose
results were lost with a node; a block that runs twice writes the same part names twice,
so the output holds each document once. If the driver dies, ``--resume`` plans the same
blocks and runs only those without a commit record. docs/scale.md states the semantics.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import ray
from ray.data import ActorPoolStrategy

from nere.engine.cluster.batches import BatchExtractor
from nere.engine.cluster.blocks import Block, OutputFolder, plan_blocks, run_block
from nere.engine.errors import EngineError
from nere.engine.manifest import Manifest
from nere.engine.parquet_io import open_inputs, resolve_inputs
from nere.engine.segment import DEFAULT_MAX_DOC_CHARS

BLOCK_DOCS = 10_000  # documents per block: the unit of retry and of resume
FAILURE_SAMPLE = 100


class BlockWriter:
    """A ``map_batches`` class for the block plan: each row names a block; the actor reads,
    extracts and commits it and returns its commit record (as JSON)."""

    def __init__(self, out: str, bundle: str, re_bundle: str | None, id_col: str, text_col: str,
                 engine_options: dict[str, Any]) -> None:
        self.out, self.id_col, self.text_col = Path(out), id_col, text_col
        self.extractor = BatchExtractor(bundle, re_bundle, id_col, text_col, **engine_options)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: pa.Table) -> pa.Table:
        records = []
        for row in batch.to_pylist():
            record = run_block(self.extractor, self.out, Block.from_row(json.loads(row["block"])),
                               self.id_col, self.text_col, {"node": self.node})
            records.append(json.dumps(record))
        return pa.table({"record": pa.array(records, pa.string())})


def connect(address: str) -> bool:
    """Join (or start) a Ray cluster; False when this process was already connected.
    ``auto``: Ray's own choice (RAY_ADDRESS, a cluster started on this machine with
    ``ray start``, else a new local one); anything else: that cluster's address."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=None if address == "auto" else address, log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise EngineError(f"cannot join the Ray cluster {address!r}: {_first_line(err)}") from None
    return True


def _engine_error(err: BaseException) -> str | None:
    """The message of an EngineError raised inside an actor. Ray Data hands the driver a
    wrapper whose text holds the actor's traceback, ending in the error's own line."""
    found = re.findall(r"^nere\.engine\.errors\.\w+: (.+)$", str(err), flags=re.MULTILINE)
    return found[-1] if found else None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _alive_nodes() -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]


def pool_shape(device: str, actors: int | None, threads: int | None) -> tuple[int, int]:
    """(actors, CPUs per actor). CPU default: one actor per node, each with the node's
    cores as engine threads (the engine parallelises inside a process); CUDA: one actor
    per GPU, each holding the cores of its share of the node (tokenizing and decoding)."""
    nodes = _alive_nodes()
    if not nodes:
        raise EngineError("the Ray cluster has no node with CPUs")
    biggest = max(int(n["Resources"]["CPU"]) for n in nodes)
    total = int(sum(n["Resources"]["CPU"] for n in nodes))
    if device == "cuda":
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus == 0:
            raise EngineError("--device cuda: the Ray cluster has no GPU")
        actors = actors or gpus
        return actors, threads or max(1, min(biggest, total // max(gpus, actors)))
    actors = actors or len(nodes)
    return actors, threads or max(1, min(biggest, total // actors))


def _verified_sha256(bundle: str | Path) -> str:
    """The bundle's identity (sha256 of its manifest), after checking its files."""
    manifest = Manifest.read(bundle)
    manifest.verify_files(bundle)
    return manifest.sha256 or ""


def run_on_ray(
    inputs: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    bundle: str | Path,
    re_bundle: str | Path | None = None,
    *,
    address: str = "auto",
    actors: int | None = None,
    id_col: str = "id",
    text_col: str = "text",
    resume: bool = False,
    overwrite: bool = False,
    limit: int | None = None,
    progress: bool = True,
    block_docs: int = BLOCK_DOCS,
    device: str = "auto",
    threads: int | None = None,
    max_doc_chars: int = DEFAULT_MAX_DOC_CHARS,
    **engine_options: Any,
) -> dict[str, Any]:
    """Run the engine over Parquet inputs on a Ray cluster into ``out_dir``; returns the
    summary (also written to summary.json), with the keys of a single-machine run's."""
    started = time.perf_counter()
    if limit is not None:
        raise EngineError("--limit is not available with --ray: blocks are whole row groups")
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    files = open_inputs(resolve_inputs(inputs), id_col, text_col)
    sha = _verified_sha256(bundle)
    re_sha = _verified_sha256(re_bundle) if re_bundle is not None else None
    config = {
        "inputs": [{"path": str(f.path.resolve()), "rows": f.rows, "bytes": f.size} for f in files],
        "id_col": id_col, "text_col": text_col, "bundle_sha256": sha, "re_bundle_sha256": re_sha,
        "block_docs": block_docs, "max_doc_chars": max_doc_chars, "batch_tokens": engine_options.get("batch_tokens"),
    }
    blocks = plan_blocks(files, block_docs)
    out, before = _open_output(Path(out_dir), config, resume, overwrite, blocks)
    todo = [b for b in blocks if b.name not in before]
    owns_connection = False
    try:
        owns_connection = connect(address) if todo else False
        shape = pool_shape(device, actors, threads) if todo else (0, 0)
        records = _run_blocks(todo, out.folder, bundle, re_bundle, id_col, text_col, device, shape,
                              {"device": device, "max_doc_chars": max_doc_chars, **engine_options}, progress)
    except BaseException:
        out.discard_if_empty()
        raise
    finally:
        if owns_connection:
            ray.shutdown()
    try:
        summary = _summary(out, _all_committed(out, blocks), before, records, time.perf_counter() - started,
                           bundle, re_bundle, sha, re_sha, device, shape, address)
        out.write_summary(summary)
    finally:
        out.release()
    return summary


def _open_output(folder: Path, config: dict[str, Any], resume: bool, overwrite: bool, blocks: list[Block]
                 ) -> tuple[OutputFolder, dict[str, Any]]:
    """The output folder, locked, and the blocks an earlier run committed (its other files removed)."""
    out = OutputFolder(folder, config, resume, overwrite)
    try:
        before = {name: r for name, r in out.committed().items() if name in {b.name for b in blocks}}
        out.remove_uncommitted(before)
    except BaseException:
        out.release()
        raise
    return out, before


def _all_committed(out: OutputFolder, blocks: list[Block]) -> list[dict[str, Any]]:
    """Every block's commit record, in input order; temporary files of attempts killed
    mid-write (a lost node) are removed."""
    committed = out.committed()
    missing = [b.name for b in blocks if b.name not in committed]
    if missing:
        raise EngineError(f"{len(missing)} blocks were not committed (first: {missing[0]}); rerun with --resume")
    out.remove_uncommitted(committed)
    return [committed[b.name] for b in blocks]


def _run_blocks(todo: list[Block], out: Path, bundle: str | Path, re_bundle: str | Path | None, id_col: str,
                text_col: str, device: str, shape: tuple[int, int], engine_options: dict[str, Any],
                progress: bool) -> list[dict[str, Any]]:
    """Commit records of the blocks run now, as the actors return them."""
    if not todo:
        return []
    actors, threads = shape
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # nere's own bar counts documents
    plan = ray.data.from_items([{"block": json.dumps(b.to_row())} for b in todo],
                               override_num_blocks=len(todo))
    resources = {"num_gpus": 1, "num_cpus": threads} if device == "cuda" else {"num_cpus": threads}
    results = plan.map_batches(
        BlockWriter,
        fn_constructor_kwargs={"out": str(out.resolve()), "bundle": str(Path(bundle).resolve()),
                               "re_bundle": None if re_bundle is None else str(Path(re_bundle).resolve()),
                               "id_col": id_col,
                               "text_col": text_col,
                               "engine_options": {**engine_options, "threads": None if device == "cuda" else threads}},
        batch_size=1, batch_format="pyarrow", compute=ActorPoolStrategy(size=actors), **resources)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(b.end - b.first for b in todo), unit="doc", desc="extract (ray)", dynamic_ncols=True)
    records: dict[str, dict[str, Any]] = {}
    try:
        for row in results.iter_rows():
            record = json.loads(row["record"])
            records[record["name"]] = record  # a block run twice counts once
            if bar is not None:
                bar.update(record["documents"])
    except ray.exceptions.RayError as err:
        why = _engine_error(err) or _first_line(err)
        raise EngineError(f"the Ray job failed ({why}); committed blocks are kept: rerun with --resume") from None
    finally:
        if bar is not None:
            bar.close()
    return list(records.values())


def _summary(out: OutputFolder, records: list[dict[str, Any]], before: dict[str, Any], now: list[dict[str, Any]],
             seconds: float, bundle: str | Path, re_bundle: str | Path | None, sha: str, re_sha: str | None,
             device: str, shape: tuple[int, int], address: str) -> dict[str, Any]:
    def total(key: str, rs: Any = records) -> int:
        return sum(r[key] for r in rs)

    reasons: dict[str, int] = {}
    for r in records:
        for k, v in r["failure_reasons"].items():
            reasons[k] = reasons.get(k, 0) + v
    docs, tokens = total("documents", now), total("tokens", now)
    engine = now[0]["engine"] if now else records[0]["engine"] if records else {}
    return {
        "documents_read": total("documents"),
        "documents_written": total("documents") - total("failed"),
        "documents_failed": total("failed"),
        "failure_reasons": dict(sorted(reasons.items())),
        "failures": out.failure_sample(records, FAILURE_SAMPLE),
        "failures_table": str(out.folder / "failures"),
        "documents_with_control_chars_replaced": total("cleaned"),
        "entities": total("entities"),
        "relations": total("relations"),
        "tokens": total("tokens"),
        "seconds": round(seconds, 3),
        "documents_this_run": docs,
        "documents_before_resume": total("documents", before.values()),
        "documents_per_second": round(docs / seconds, 1) if seconds > 0 else None,
        "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
        "resumed": out.resumed,
        "parts": len(records),
        "out_dir": str(out.folder),
        "inputs": [i["path"] for i in out.config["inputs"]],
        "provider": engine.get("provider", "n/a"),
        "device": device,
        "batch_tokens": engine.get("batch_tokens"),
        "provider_notes": [],
        "bundle": {"path": str(bundle), "sha256": sha},
        "re_bundle": {"path": str(re_bundle), "sha256": re_sha} if re_bundle is not None else None,
        "ray": {"address": address, "actors": shape[0], "threads_per_actor": shape[1],
                "blocks": len(records), "blocks_this_run": len(now),
                "nodes": sorted({r["engine"].get("node", "") for r in now})},
    }


__all__ = ["BLOCK_DOCS", "BlockWriter", "connect", "run_on_ray"]
