"""Per-model locks across threads and processes (fcntl lock files in state/locks/).

`ingest` holds `<model>.ingest` while it turns an arrival into a ledger row, so two
copies of one file arriving at once cannot both write it; `update` holds
`<model>.update` while it processes batches, so two updates of one model never
interleave (the champion alias is additionally moved by compare-and-swap in the
ledger). The kernel drops an flock when its holder dies, even by SIGKILL: a crashed
update never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import re
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_THREAD_LOCKS: dict[Path, threading.Lock] = {}
_GUARD = threading.Lock()


class LockTimeout(TimeoutError):
    """The lock stayed taken longer than the caller was willing to wait."""


def lock_path(state: Path, name: str) -> Path:
    if not _SAFE.match(name) or ".." in name:
        raise ValueError(f"unsafe lock name {name!r}")
    return state / "locks" / f"{name}.lock"


@contextmanager
def file_lock(path: Path, timeout_s: float | None = None, poll_s: float = 0.05) -> Iterator[None]:
    """Exclusive lock on `path`: a thread lock (flock is per open file, not per thread)
    and then the flock itself. `timeout_s=None` waits for as long as it takes."""
    tlock = _thread_lock(path)
    if not tlock.acquire(timeout=-1 if timeout_s is None else timeout_s):
        raise LockTimeout(f"{path.name} is held by another thread")
    try:
        with _open_lock_file(path) as f:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                    break
                except BlockingIOError as e:
                    if time.monotonic() >= deadline:  # type: ignore[operator]
                        raise LockTimeout(f"{path.name} is held by another process") from e
                    time.sleep(poll_s)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
    finally:
        tlock.release()


def _thread_lock(path: Path) -> threading.Lock:
    """The thread lock of the file `path` resolves to, resolved once per path: a lock
    is taken several times per batch, and resolving walks every folder of the path."""
    with _GUARD:
        tlock = _THREAD_LOCKS.get(path)
        if tlock is None:
            tlock = _THREAD_LOCKS.setdefault(path.resolve(), threading.Lock())
            _THREAD_LOCKS[path] = tlock
        return tlock


def _open_lock_file(path: Path) -> IO[str]:
    """The lock file, opened for append; its folder is made only when it is missing."""
    try:
        return path.open("a")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("a")


def model_lock(state: Path, model: str, kind: str,
               timeout_s: float | None = None) -> AbstractContextManager[None]:
    """The `kind` ('ingest' or 'update') lock of one registered model."""
    return file_lock(lock_path(state, f"{model}.{kind}"), timeout_s)
