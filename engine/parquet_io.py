"""Streaming Parquet in; atomic part files and a progress record out.

Reading: only the id and text columns, record batch by record batch, cut into *units*
(at most ``unit_docs`` rows and about ``unit_chars`` characters). Unit boundaries depend
only on the files and these settings, so a resumed run sees exactly the units of an
uninterrupted one and writes byte-identical parts.

Writing: a part collects whole units; its files are written under a temporary name in
the same folder, then ``os.replace``d, and only then is ``progress.json`` (itself
replaced atomically) updated to list the part and the row ranges it covers. The progress
record is the truth: on ``--resume`` any part file it does not list is removed and
every unit it lists is skipped, so each document ends up in the output exactly once.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import threading
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nere.engine.errors import EngineError
from nere.engine.lock import LOCK_NAME, FolderLock
from nere.engine.pipeline import Unit, UnitResult

OUTPUTS = ("entities", "relations", "failures")
PROGRESS, SUMMARY = "progress.json", "summary.json"
OURS = frozenset(OUTPUTS) | {PROGRESS, SUMMARY, LOCK_NAME}
ROW_GROUP_ROWS = 65_536
PROGRESS_VERSION = 1
PART_COUNTS = ("documents", "failed", "cleaned", "tokens", "entities", "relations")  # per part in the progress record
EDGE_DOCS = 128  # documents in the first and the last unit of an input: see edge_cuts


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ---------------------------------------------------------------------------- input
@dataclass
class InputFile:
    path: Path
    rows: int
    size: int
    id_type: pa.DataType


def resolve_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given; folders expand to their ``*.parquet`` files (sorted, recursive)."""
    if not inputs:
        raise EngineError("no input given")
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*.parquet") if q.is_file())
            if not found:
                raise EngineError(f"input {p}: folder holds no .parquet files")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise EngineError(f"input {p}: no such file or folder")
    seen, unique = set(), []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def is_text_type(t: pa.DataType) -> bool:
    """Whether a column of type ``t`` holds texts: strings (any Arrow layout, dictionary
    encoded too) or only nulls. Any other type would fail every row, so it is refused whole."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
            or pa.types.is_null(t))


def check_text_type(t: pa.DataType, where: str, text_col: str) -> None:
    """Raise a one-line EngineError naming the input, the column and its type when the
    text column holds no strings (an int64 or binary column, say)."""
    if not is_text_type(t):
        raise EngineError(
            f"{where}: text column {text_col!r} is {t}, not string; cast it to string or pick "
            "the text column with --text-col"
        )


def open_inputs(files: Sequence[Path], id_col: str, text_col: str) -> list[InputFile]:
    """Check every file's footer and columns before any work starts."""
    out: list[InputFile] = []
    for f in files:
        try:
            pf = pq.ParquetFile(f)
            schema = pf.schema_arrow
        except (pa.ArrowException, OSError, ValueError) as err:
            raise EngineError(f"input {f}: not a readable Parquet file ({_first_line(err)})") from None
        for col, what in ((id_col, "id"), (text_col, "text")):
            if col not in schema.names:
                raise EngineError(
                    f"input {f}: no {what} column {col!r} (it has {', '.join(schema.names) or 'no columns'})"
                )
        check_text_type(schema.field(text_col).type, f"input {f}", text_col)
        id_type = schema.field(id_col).type
        if out and id_type != out[0].id_type:
            raise EngineError(f"input {f}: id column {id_col!r} is {id_type}, but {out[0].path} has {out[0].id_type}")
        out.append(InputFile(f, pf.metadata.num_rows, f.stat().st_size, id_type))
    return out


def _char_cuts(texts: pa.Array, unit_docs: int, unit_chars: int) -> list[tuple[int, int]]:
    """Row ranges of a record batch: <= unit_docs rows and about unit_chars characters."""
    n = len(texts)
    if pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type):
        lengths = pc.fill_null(pc.utf8_length(texts), 0).to_pylist()
    else:
        lengths = [0] * n
    cuts, start, acc = [], 0, 0
    for i, length in enumerate(lengths):
        if i > start and (acc + length > unit_chars or i - start >= unit_docs):
            cuts.append((start, i))
            start, acc = i, 0
        acc += length
    if start < n:
        cuts.append((start, n))
    return cuts


def edge_cuts(cuts: list[tuple[int, int]], lead: int, tail: int) -> list[tuple[int, int]]:
    """``cuts`` with the first range cut after ``lead`` rows and the last cut ``tail`` rows
    before its end, where they are longer.

    Nothing runs in parallel with the first unit's reading and preparing (the model waits)
    or with the last unit's decoding, assembling and writing (the model is done), so small
    units at the edges of a run shorten both waits. The cut
    only refines the ranges, so a progress record of an earlier cut still tells exactly
    which of the new units are done."""
    if lead > 0 and cuts and cuts[0][1] - cuts[0][0] > lead:
        a, b = cuts[0]
        cuts = [(a, a + lead), (a + lead, b)] + cuts[1:]
    if tail > 0 and cuts and cuts[-1][1] - cuts[-1][0] > tail:
        a, b = cuts[-1]
        cuts = cuts[:-1] + [(a, b - tail), (b - tail, b)]
    return cuts


def units_of_batch(batch: pa.RecordBatch | pa.Table, id_col: str, text_col: str, unit_docs: int, unit_chars: int,
                   source: str, row0: int, lead: int = 0, tail: int = 0) -> Iterator[Unit]:
    """The units of one record batch; ``lead``/``tail``: the batch opens/closes the input
    and its first/last unit holds that many rows (:func:`edge_cuts`)."""
    ids = batch.column(id_col)
    texts = batch.column(text_col)
    check_text_type(texts.type, "input" if source == "<table>" else f"input {source}", text_col)
    if isinstance(ids, pa.ChunkedArray):
        ids, texts = ids.combine_chunks(), texts.combine_chunks()
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        texts = texts.cast(pa.string())  # dictionary-encoded, string view or all-null: plain strings
    for a, b in edge_cuts(_char_cuts(texts, unit_docs, unit_chars), lead, tail):
        yield Unit(ids.slice(a, b - a), texts.slice(a, b - a).to_pylist(), source, row0 + a)


def iter_units(
    inputs: Sequence[InputFile],
    id_col: str,
    text_col: str,
    unit_docs: int,
    unit_chars: int,
    limit: int | None = None,
    done: Callable[[int, int, int], bool] = lambda f, a, b: False,
    edge_docs: int = EDGE_DOCS,
) -> Iterator[tuple[int, Unit]]:
    """(file index, unit) over all inputs in order; the first ``limit`` rows only; units
    for which ``done(file index, first row, end row)`` holds are skipped. The first and
    the last unit of an input of several units hold ``edge_docs`` documents (:func:`edge_cuts`)."""
    columns = list(dict.fromkeys([id_col, text_col]))
    left = limit
    rows = sum(inp.rows for inp in inputs)
    total = rows if limit is None else min(limit, rows)
    edge = edge_docs if total > unit_docs else 0  # one unit: nothing to overlap it with
    read = 0
    for fi, inp in enumerate(inputs):
        row = 0
        try:
            batches = pq.ParquetFile(inp.path).iter_batches(batch_size=unit_docs, columns=columns)
            for batch in batches:
                if left is not None:
                    if left <= 0:
                        return
                    batch = batch.slice(0, left)
                    left -= batch.num_rows
                lead = edge if read == 0 else 0
                read += batch.num_rows
                tail = edge if read >= total else 0
                for unit in units_of_batch(batch, id_col, text_col, unit_docs, unit_chars, str(inp.path), row,
                                           lead, tail):
                    if not done(fi, unit.row0, unit.row0 + len(unit.texts)):
                        yield fi, unit
                row += batch.num_rows
        except (pa.ArrowException, OSError) as err:
            raise EngineError(f"input {inp.path}: cannot read rows after row {row} ({_first_line(err)})") from None


def background(items: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Iterate ``items`` in a worker thread, ``depth`` ahead: reading and tokenizing the
    next unit overlaps the model running on this one. Errors re-raise in the caller."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((end, None))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            q.put((end, err))

    thread = threading.Thread(target=work, name="nere-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, err = q.get()
            if item is end:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a worker waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)


# ---------------------------------------------------------------------------- output
def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class Part:
    """One part being written: a temporary Parquet file per output table."""

    index: int
    folder: Path
    schemas: dict[str, pa.Schema]
    ranges: list[list[int]] = field(default_factory=list)  # [file index, first row, end row]
    stats: dict[str, Any] = field(default_factory=lambda: {**dict.fromkeys(PART_COUNTS, 0), "failure_reasons": {}})
    _writers: dict[str, pq.ParquetWriter] = field(default_factory=dict)
    _buffers: dict[str, list[pa.Table]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}.parquet"

    def tmp(self, table: str) -> Path:
        return self.folder / table / f".{self.name}.tmp"

    def final(self, table: str) -> Path:
        return self.folder / table / self.name

    def add(self, file_index: int, unit: Unit, result: UnitResult) -> None:
        first, end = unit.row0, unit.row0 + len(unit.texts)
        if self.ranges and self.ranges[-1][0] == file_index and self.ranges[-1][2] == first:
            self.ranges[-1][2] = end
        else:
            self.ranges.append([file_index, first, end])
        s = self.stats
        for key, value in zip(PART_COUNTS, (result.documents, result.failed, result.cleaned, result.tokens,
                                            result.entities.num_rows, result.relations.num_rows)):
            s[key] += value
        reasons = s["failure_reasons"]
        for why in result.failures.column("reason").to_pylist():
            kind = why.split(" (")[0]
            reasons[kind] = reasons.get(kind, 0) + 1
        for table in OUTPUTS:
            buf = self._buffers.setdefault(table, [])
            buf.append(getattr(result, table))
            if sum(t.num_rows for t in buf) >= ROW_GROUP_ROWS:
                self._flush(table)

    def _flush(self, table: str) -> None:
        buf = self._buffers.get(table) or []
        if table not in self._writers:
            self.tmp(table).parent.mkdir(parents=True, exist_ok=True)
            self._writers[table] = pq.ParquetWriter(self.tmp(table), self.schemas[table], compression="zstd")
        if buf:
            self._writers[table].write_table(pa.concat_tables(buf), row_group_size=ROW_GROUP_ROWS)
        self._buffers[table] = []

    def commit(self) -> None:
        """Close, fsync and move every table into place (progress is updated after)."""
        for table in OUTPUTS:
            self._flush(table)
            self._writers.pop(table).close()
            with open(self.tmp(table), "rb") as f:
                os.fsync(f.fileno())
        for table in OUTPUTS:
            os.replace(self.tmp(table), self.final(table))

    def abort(self) -> None:
        for w in self._writers.values():
            try:
                w.close()
            except Exception:  # noqa: BLE001 - cleaning up after another error
                pass
        self._writers.clear()
        for table in OUTPUTS:
            self.tmp(table).unlink(missing_ok=True)


RESUME_OPTIONS = frozenset({"batch_tokens", "max_doc_chars", "part_docs", "limit", "line_breaks"})  # `nere extract` options in the run config


class RunState:
    """The output folder of one run: its checks, its progress record, its parts, and the
    folder's lock (:mod:`nere.engine.lock`), held from the first check to :meth:`release`."""

    def __init__(self, folder: Path, config: dict[str, Any], resume: bool, overwrite: bool) -> None:
        self.folder = folder
        self.config = config
        self.parts: list[dict[str, Any]] = []
        self.complete = False
        self.created = False
        self.resumed = False
        self._lock: FolderLock | None = None
        try:
            self._open(resume, overwrite)
        except BaseException:
            self.discard_if_empty()
            raise
        self._done: dict[int, list[tuple[int, int]]] = {}
        for part in self.parts:
            for fi, a, b in part["ranges"]:
                self._done.setdefault(fi, []).append((a, b))
        for ranges in self._done.values():
            ranges.sort()

    def _open(self, resume: bool, overwrite: bool) -> None:
        f = self.folder
        if resume and overwrite:
            raise EngineError("use either --resume or --overwrite, not both")
        try:
            f.mkdir(parents=True)
            self.created = True
        except FileExistsError:  # there already, or another run made it just now
            if not f.is_dir():
                raise EngineError(f"output {f}: exists and is not a folder") from None
        except OSError as err:
            raise EngineError(f"output {f}: cannot create the folder ({err.strerror})") from None
        self._lock = FolderLock.acquire(f)  # before anything is read or removed
        entries = sorted(p.name for p in f.iterdir() if p.name != LOCK_NAME)
        foreign = [e for e in entries if e not in OURS]
        if entries and not (resume or overwrite):
            raise EngineError(f"output folder {f} is not empty; use --resume to continue its run or --overwrite to replace it")
        if foreign and (resume or overwrite):
            raise EngineError(
                f"output folder {f} holds files nere extract did not write ({', '.join(foreign[:5])}); "
                "choose another --out"
            )
        if overwrite:
            for e in entries:
                p = f / e
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        if resume and (f / PROGRESS).is_file():
            self._load_progress()
        for table in OUTPUTS:
            (f / table).mkdir(exist_ok=True)
        self._remove_orphans()

    def _load_progress(self) -> None:
        path = self.folder / PROGRESS
        try:
            record = json.loads(path.read_text())
            parts, old = record["parts"], record["config"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise EngineError(f"progress record {path}: unreadable ({_first_line(err)}); use --overwrite") from None
        if record.get("version") != PROGRESS_VERSION:
            raise EngineError(f"progress record {path}: version {record.get('version')!r} is not {PROGRESS_VERSION}")
        changed = [k for k in sorted(set(old) | set(self.config)) if old.get(k) != self.config.get(k)]
        if changed:
            k = changed[0]
            # defaults can change between versions (batch_tokens did): name the option to pass
            hint = f" (pass --{k.replace('_', '-')} {old[k]})" if k in RESUME_OPTIONS and old.get(k) is not None else ""
            raise EngineError(
                f"cannot resume {self.folder}: {k} was {old.get(k)!r}, now {self.config.get(k)!r}; "
                f"rerun with the same inputs, bundles and options{hint}, or use --overwrite"
            )
        self.parts = parts
        self.complete = bool(record.get("complete"))
        self.resumed = True

    def _remove_orphans(self) -> None:
        """Drop temporary files and parts a killed run wrote but never recorded."""
        listed = {p["name"] for p in self.parts}
        for table in OUTPUTS:
            for p in (self.folder / table).iterdir():
                if p.name not in listed:
                    p.unlink()
        (self.folder / f".{PROGRESS}.tmp").unlink(missing_ok=True)
        (self.folder / SUMMARY).unlink(missing_ok=True)

    def done(self, file_index: int, first: int, end: int) -> bool:
        ranges = self._done.get(file_index)
        if not ranges:
            return False
        i = bisect_right(ranges, (first, float("inf"))) - 1
        return i >= 0 and ranges[i][0] <= first and end <= ranges[i][1]

    @property
    def documents_done(self) -> int:
        return sum(p.get("documents", 0) for p in self.parts)

    def new_part(self, schemas: dict[str, pa.Schema]) -> Part:
        return Part(len(self.parts), self.folder, schemas)

    def commit(self, part: Part) -> None:
        part.commit()
        self.parts.append({"name": part.name, "ranges": part.ranges, **part.stats})
        self._save()

    def finish(self, schemas: dict[str, pa.Schema]) -> None:
        """Mark the run complete. A run that committed no part (no input rows) commits one
        empty part, so that every table folder holds a file with the schema."""
        if not self.parts:
            self.commit(self.new_part(schemas))
        self.complete = True
        self._save()

    def _save(self) -> None:
        record = {"version": PROGRESS_VERSION, "config": self.config, "complete": self.complete, "parts": self.parts}
        write_atomic(self.folder / PROGRESS, json.dumps(record, indent=1, default=str).encode())

    def totals(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: sum(p.get(k, 0) for p in self.parts) for k in PART_COUNTS}
        reasons: dict[str, int] = {}
        for p in self.parts:
            for k, v in p.get("failure_reasons", {}).items():
                reasons[k] = reasons.get(k, 0) + v
        out["failure_reasons"] = dict(sorted(reasons.items()))
        return out

    def failure_sample(self, n: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for p in self.parts:
            if len(rows) >= n:
                break
            for batch in pq.ParquetFile(self.folder / "failures" / p["name"]).iter_batches(batch_size=n):
                rows.extend(batch.to_pylist()[: n - len(rows)])
                if len(rows) >= n:
                    break
        return rows

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_atomic(self.folder / SUMMARY, json.dumps(summary, indent=2, default=str).encode())

    def discard_if_empty(self) -> None:
        """After an error before any part was committed, leave no folder we created (and
        still hold: a run refused by the lock leaves the holder's folder alone); unlock."""
        if self.created and not self.parts and self._lock is not None and self._lock.held:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.release()

    def release(self) -> None:
        """Unlock the folder: another run may write it now. Safe to call more than once."""
        if self._lock is not None:
            self._lock.release()
