"""An exclusive lock on an output folder, so that two runs never write one folder at once.

The kernel holds it (``flock`` on a file in the folder) and drops it when the holding
process ends, however it ends: a run killed with SIGKILL leaves no stale lock behind, and
``--resume`` can take the folder over at once. Locks of separate ``open`` calls conflict
even inside one process, so two ``Engine.run`` calls in threads exclude each other too.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from nere.engine.errors import EngineError

LOCK_NAME = ".nere.lock"  # a hidden file in the output folder, removed when the run ends


class FolderLock:
    """The lock of one output folder, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, folder: Path) -> "FolderLock":
        """Lock ``folder`` (which must exist) or raise EngineError naming it and the holder."""
        path = folder / LOCK_NAME
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise EngineError(f"output folder {folder}: cannot create its lock file ({err.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise EngineError(
                    f"output folder {folder} is in use by another run{f' (process {holder})' if holder else ''}; "
                    "wait for it to end, or choose another --out"
                ) from None
            except OSError as err:
                os.close(fd)
                raise EngineError(f"output folder {folder}: cannot lock it ({err.strerror})") from None
            if _same_file(path, fd):
                break
            os.close(fd)  # the holder removed the file as we opened it: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file (only if it is still ours) and unlock; a no-op when released."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if _same_file(self.path, fd):
                self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a run object dropped without release: unlock now, not at exit
        try:
            self.release()
        except Exception:  # noqa: BLE001 - nothing to report to during garbage collection
            pass


def _same_file(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a releasing run unlinks it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
