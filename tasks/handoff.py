"""Accepted batches this process wrote, handed to the update without decoding them again.

The update learns only from the bytes DVC versioned: it reads the accepted Parquet back
even in the process that just wrote it, so a file damaged after acceptance fails its
update instead of training on a copy in memory. Decoding it is most of that read (13.8 ms
of CPU for a 200-row, 500-column batch; reading and hashing its bytes 1.4 ms, measured
6 Dec). So the frame a file was written from is kept, under the md5 DVC recorded for the
file, and handed back only when the file's bytes hash to that same md5 now: the same bytes,
hence the same frame (tests/unit/test_handoff.py decodes and compares). A file changed
on disk since is decoded as before, and fails if it is damaged. Each caller gets its own
copy: a compare's policies share this process and must not share a mutable frame.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

import pandas as pd

from greenloop.columnar import read_parquet

MAX_KEPT_BYTES = 256 * 2**20  # frames kept, oldest dropped first; a served arrival needs one

_kept: OrderedDict[str, tuple[pd.DataFrame, int]] = OrderedDict()  # md5 -> (frame, bytes)
_kept_bytes = 0
_lock = threading.Lock()  # fleet threads ingest and update in one process


def keep(md5: str, frame: pd.DataFrame) -> None:
    """`frame` is what the file DVC recorded as `md5` was written from, in this process."""
    global _kept_bytes
    size = nbytes(frame)
    with _lock:
        if md5 in _kept:
            _kept_bytes -= _kept.pop(md5)[1]
        _kept[md5] = (frame, size)
        _kept_bytes += size
        while len(_kept) > 1 and _kept_bytes > MAX_KEPT_BYTES:
            _kept_bytes -= _kept.popitem(last=False)[1][1]


def nbytes(frame: pd.DataFrame) -> int:
    """What `frame.memory_usage(index=False).sum()` answers for a validated batch: 8 bytes
    a cell, since its columns are float64 or text (a pointer per cell); an upper bound for
    narrower dtypes. `memory_usage` builds a Series per column (2.4 ms of CPU at 500
    columns, measured 6 Dec) and even `frame.dtypes` builds one (~0.4 ms a call inside a
    served skip, which sizes its batch twice, py-spy 7 Dec), for a number that only
    bounds a cache."""
    return len(frame) * len(frame.columns) * 8


def load(path: Path, md5: str | None) -> pd.DataFrame:
    """The accepted batch at `path`, whose recorded DVC md5 is `md5` (None: unknown)."""
    data = path.read_bytes()
    if md5 and hashlib.md5(data).hexdigest() == md5:  # noqa: S324 - DVC's content hash
        with _lock:
            kept = _kept.get(md5)
        if kept is not None:
            return kept[0].copy()
    return read_parquet(data)
