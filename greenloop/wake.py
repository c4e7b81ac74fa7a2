"""Waiting for the next file at no cost: what `greenloop wake` does between two serves.

`wake` keeps no Prefect, MLflow or torch in memory: it blocks in the kernel (Linux
inotify) on the landing folders until a file is created, closed after writing or renamed
into one, and only then starts `serve`. Where inotify is not available it lists the
folders every `poll_seconds` instead. Pure: no Prefect here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import sys
import time
from pathlib import Path

from greenloop.watch import LandingWatcher

# inotify(7): a file closed after writing, renamed into the folder, or created.
IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x008, 0x080, 0x100


def unreported(folder: Path, state_path: Path) -> list[str]:
    """Landing files no serve has reported yet: a name whose (size, mtime) is not the one
    serve's watcher saved in its state file (greenloop/watch.py), or that it never saw."""
    return LandingWatcher(folder, state_path).unreported()


class FolderWaiter:
    """Blocks until something lands in one of `folders` (or `timeout_s` passes)."""

    def __init__(self, folders: list[Path], poll_seconds: float = 5.0) -> None:
        self.folders, self.poll_seconds = folders, poll_seconds
        self.fd = _inotify(folders)

    @property
    def method(self) -> str:
        return "inotify" if self.fd is not None else f"a listing every {self.poll_seconds:g} s"

    def wait(self, timeout_s: float | None = None) -> None:
        """Return after an event, or after `timeout_s` (polling: after one poll period)."""
        if self.fd is None:
            time.sleep(self.poll_seconds if timeout_s is None
                       else min(self.poll_seconds, timeout_s))
            return
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if ready:
            os.read(self.fd, 64 * 1024)  # drain: which file does not matter, the scan decides

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _inotify(folders: list[Path]) -> int | None:
    """An inotify descriptor watching `folders`; None where the kernel call is missing."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = libc.inotify_init1(os.O_CLOEXEC)
    except (OSError, AttributeError):
        return None
    if fd < 0:
        return None
    for folder in folders:
        mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
        if libc.inotify_add_watch(fd, str(folder).encode(), mask) < 0:
            os.close(fd)  # e.g. the per-user watch limit: fall back to listing
            return None
    return fd


__all__ = ["FolderWaiter", "unreported"]
