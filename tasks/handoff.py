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

_kept: OrderedDict[str, pd.DataFrame] = OrderedDict()
_lock = threading.Lock()  # fleet threads ingest and update in one process


def keep(md5: str, frame: pd.DataFrame) -> None:
    """`frame` is what the file DVC recorded as `md5` was written from, in this process."""
    with _lock:
        _kept[md5] = frame
        _kept.move_to_end(md5)
        while len(_kept) > 1 and _kept_bytes() > MAX_KEPT_BYTES:
            _kept.popitem(last=False)


def _kept_bytes() -> int:
    return sum(int(f.memory_usage(index=False).sum()) for f in _kept.values())


def load(path: Path, md5: str | None) -> pd.DataFrame:
    """The accepted batch at `path`, whose recorded DVC md5 is `md5` (None: unknown)."""
    data = path.read_bytes()
    if md5 and hashlib.md5(data).hexdigest() == md5:  # noqa: S324 - DVC's content hash
        with _lock:
            frame = _kept.get(md5)
        if frame is not None:
            return frame.copy()
    return read_parquet(data)
