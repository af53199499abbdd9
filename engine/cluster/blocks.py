"""Input blocks and their exactly-once commit, with no cluster library involved.

A *block* is a run of whole row groups of one input file (about ``block_docs`` rows; a
row group is never split, so a block reads only its own rows). Its part files are named
from the input file's index and the block's first row, so the name depends only on the
inputs and ``block_docs``: a retried, restarted or resumed block writes the same names.

Commit, done by the worker that ran the block: each table is written to a temporary file
with a name of its own (two attempts at one block never share a file), fsynced and
``os.replace``d onto ``<table>/<part name>``; then ``blocks/<part name>.json`` records the
block (its rows and counts), itself written atomically. That record is the commit: a block
without one is redone, and its redo replaces whatever part files an earlier attempt left,
so each input row is in the output exactly once however often its block ran.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from nere.engine.cluster.batches import BatchExtractor, BatchResult
from nere.engine.errors import EngineError
from nere.engine.lock import LOCK_NAME, FolderLock
from nere.engine.parquet_io import OUTPUTS, ROW_GROUP_ROWS, SUMMARY, InputFile, write_atomic

BLOCKS = "blocks"  # one commit record per finished block
RUN = "run.json"  # the run's settings, checked on --resume
OURS = frozenset(OUTPUTS) | {BLOCKS, RUN, SUMMARY, LOCK_NAME}
RUN_VERSION = 1


@dataclass(frozen=True)
class Block:
    """Row groups ``row_groups`` of input ``file_index``: rows [first, end). ``path`` is
    absolute (workers run elsewhere); ``source``, the path as given, names failed rows as
    a single-machine run does."""

    file_index: int
    path: str
    source: str
    row_groups: tuple[int, ...]
    first: int
    end: int

    @property
    def name(self) -> str:
        return f"part-{self.file_index:05d}-{self.first:012d}.parquet"

    def to_row(self) -> dict[str, Any]:
        return {**asdict(self), "row_groups": list(self.row_groups)}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Block":
        return cls(int(row["file_index"]), str(row["path"]), str(row["source"]),
                   tuple(int(g) for g in row["row_groups"]), int(row["first"]), int(row["end"]))


def plan_blocks(files: Iterable[InputFile], block_docs: int) -> list[Block]:
    """Consecutive row groups of each file, gathered until a block holds ``block_docs`` rows."""
    if block_docs < 1:
        raise EngineError(f"block_docs must be positive, got {block_docs}")
    blocks: list[Block] = []
    for fi, f in enumerate(files):
        meta = pq.ParquetFile(f.path).metadata
        path, source = str(f.path.resolve()), str(f.path)
        groups: list[int] = []
        first = row = 0
        for g in range(meta.num_row_groups):
            groups.append(g)
            row += meta.row_group(g).num_rows
            if row - first >= block_docs:
                blocks.append(Block(fi, path, source, tuple(groups), first, row))
                groups, first = [], row
        if groups and row > first:
            blocks.append(Block(fi, path, source, tuple(groups), first, row))
    return blocks


def read_block(block: Block, id_col: str, text_col: str) -> pa.Table:
    columns = list(dict.fromkeys([id_col, text_col]))
    try:
        table = pq.ParquetFile(block.path).read_row_groups(list(block.row_groups), columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise EngineError(f"input {block.source}: cannot read rows {block.first}-{block.end} ({err})") from None
    if table.num_rows != block.end - block.first:
        raise EngineError(f"input {block.source}: rows {block.first}-{block.end} changed since the run was planned")
    return table


def failure_kinds(failures: pa.Table) -> dict[str, int]:
    """Failed rows per kind of reason (the reason up to its detail in parentheses)."""
    kinds: dict[str, int] = {}
    for why in failures.column("reason").to_pylist():
        kind = why.split(" (")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def _replace_atomic(path: Path, data: bytes, attempt: str) -> None:
    """Like :func:`~nere.engine.parquet_io.write_atomic`, with a temporary name per attempt:
    two attempts at one block (a task retried while the first still runs) never share one."""
    tmp = path.with_name(f".{path.name}.{attempt}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_table(table: pa.Table, tmp: Path) -> None:
    pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())


def commit_block(out: Path, block: Block, result: BatchResult, engine: dict[str, Any]) -> dict[str, Any]:
    """Write the block's three part files and then its commit record; returns the record."""
    attempt = uuid.uuid4().hex[:12]
    tmps = {t: out / t / f".{block.name}.{attempt}.tmp" for t in OUTPUTS}
    try:
        for t in OUTPUTS:
            _write_table(getattr(result, t), tmps[t])
        for t in OUTPUTS:
            os.replace(tmps[t], out / t / block.name)
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
    s = result.stats
    record = {
        "name": block.name, **block.to_row(),
        "documents": s["documents"], "failed": s["failed"], "cleaned": s["cleaned"], "tokens": s["tokens"],
        "entities": result.entities.num_rows, "relations": result.relations.num_rows,
        "failure_reasons": failure_kinds(result.failures), "engine": engine,
    }
    _replace_atomic(out / BLOCKS / f"{block.name}.json", json.dumps(record, indent=1).encode(), attempt)
    return record


def run_block(extractor: BatchExtractor, out: Path, block: Block, id_col: str, text_col: str,
              worker: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read, extract and commit one block (what a worker does per block); ``worker``: more
    facts for the record's ``engine`` entry (the Ray node that ran it)."""
    table = read_block(block, id_col, text_col)
    result = extractor.extract(table, source=block.source, row0=block.first)
    e = extractor.engine
    usage = resource.getrusage(resource.RUSAGE_SELF)  # the worker process's, so far
    engine = {"provider": e.provider, "batch_tokens": e.batch_tokens, "threads": e.threads, "streams": e.streams,
              "host": os.uname().nodename, "pid": os.getpid(),
              "max_rss_mib": round(usage.ru_maxrss / 1024, 1), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
              **(worker or {})}
    return commit_block(out, block, result, engine)


class OutputFolder:
    """The output folder of a cluster run: the same tables as ``nere extract`` writes, plus
    ``blocks/`` (commit records) and ``run.json`` (the settings a resume must match)."""

    def __init__(self, folder: Path, config: dict[str, Any], resume: bool, overwrite: bool) -> None:
        self.folder, self.config = folder, config
        self.resumed = False
        self.created = not folder.exists()
        self._lock = self._take(folder)  # the driver's: no second run writes this folder meanwhile
        try:
            self._open(resume, overwrite)
        except BaseException:
            self.release()
            raise

    @staticmethod
    def _take(folder: Path) -> FolderLock:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise EngineError(f"output {folder}: exists and is not a folder") from None
        except OSError as err:
            raise EngineError(f"output {folder}: cannot create the folder ({err.strerror})") from None
        return FolderLock.acquire(folder)

    def release(self) -> None:
        """Unlock the folder (safe to call more than once)."""
        self._lock.release()

    def _open(self, resume: bool, overwrite: bool) -> None:
        f = self.folder
        if resume and overwrite:
            raise EngineError("use either --resume or --overwrite, not both")
        if f.exists() and not f.is_dir():
            raise EngineError(f"output {f}: exists and is not a folder")
        entries = sorted(p.name for p in f.iterdir() if p.name != LOCK_NAME)
        foreign = [e for e in entries if e not in OURS]
        if entries and not (resume or overwrite):
            raise EngineError(f"output folder {f} is not empty; use --resume to continue its run or --overwrite to replace it")
        if foreign and (resume or overwrite):
            raise EngineError(f"output folder {f} holds files nere extract --ray did not write "
                              f"({', '.join(foreign[:5])}); choose another --out")
        if resume and entries and not (f / RUN).is_file():
            raise EngineError(f"cannot resume {f}: it has no {RUN} (not a --ray run); use --overwrite")
        if overwrite:
            for e in entries:
                p = f / e
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        if resume and (f / RUN).is_file():
            self._check_resume()
        for sub in (*OUTPUTS, BLOCKS):
            (f / sub).mkdir(parents=True, exist_ok=True)
        (f / SUMMARY).unlink(missing_ok=True)
        write_atomic(f / RUN, json.dumps({"version": RUN_VERSION, "config": self.config}, indent=1,
                                         default=str).encode())

    def _check_resume(self) -> None:
        path = self.folder / RUN
        try:
            record = json.loads(path.read_text())
            old = record["config"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise EngineError(f"run record {path}: unreadable ({err}); use --overwrite") from None
        if record.get("version") != RUN_VERSION:
            raise EngineError(f"run record {path}: version {record.get('version')!r} is not {RUN_VERSION}")
        new = json.loads(json.dumps(self.config, default=str))
        changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        if changed:
            k = changed[0]
            raise EngineError(f"cannot resume {self.folder}: {k} was {old.get(k)!r}, now {new.get(k)!r}; "
                              "rerun with the same inputs, bundles and options, or use --overwrite")
        self.resumed = True

    def committed(self) -> dict[str, dict[str, Any]]:
        """Commit records by part name."""
        records = {}
        for p in sorted((self.folder / BLOCKS).glob("*.json")):
            try:
                record = json.loads(p.read_text())
            except ValueError:
                continue  # cannot happen with atomic writes; a damaged record means: redo the block
            records[record["name"]] = record
        return records

    def remove_uncommitted(self, keep: Iterable[str]) -> None:
        """Drop temporary files and part files of blocks without a commit record. Only while
        no worker of this output runs: at the start of a run, before any block is handed out."""
        keep = set(keep)
        for t in OUTPUTS:
            for p in (self.folder / t).iterdir():
                if p.name not in keep:
                    p.unlink()
        for p in (self.folder / BLOCKS).iterdir():
            if p.suffix != ".json" or p.stem not in keep:
                p.unlink()

    def failure_sample(self, records: Iterable[dict[str, Any]], n: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for r in records:
            if len(rows) >= n:
                break
            if r["failed"]:
                rows.extend(pq.read_table(self.folder / "failures" / r["name"]).slice(0, n - len(rows)).to_pylist())
        return rows

    def discard_if_empty(self) -> None:
        """After an error before any block was committed, leave no folder we created."""
        if self.created and not any((self.folder / BLOCKS).glob("*.json")):
            shutil.rmtree(self.folder, ignore_errors=True)
        self.release()

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_atomic(self.folder / SUMMARY, json.dumps(summary, indent=2, default=str).encode())
