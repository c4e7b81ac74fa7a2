"""Accepted batches in memory, within a budget: a served model's history without its RAM
growing for as long as the service runs.

Every batch's step is given its whole history (all of it is what a full retrain on all
history trains on). Kept in memory for the life of the process, that history grew by a
batch per batch: ~0.8 GB after 1000 batches of 200 rows x 500 columns. Here a batch of
the history is a `StoredBatch`: its seq and digest at hand, its frame (with the train and
holdout rows cut from it) in one process-wide cache of at most GREENLOOP_FRAME_CACHE_MB
(default 1024), the least recently used dropped first, and read back from its accepted
Parquet file (checked against DVC's md5, tasks/handoff.py) when a step needs it again.

A skip reads only the batch and its drift reference; a fine-tune the last few batches;
only a retrain on all history reads them all, once each. The holdout rows are drawn from
the batch's digest (`greenloop.steps.make_batch`), so a batch read back is the batch it
was: the same decisions whether it stayed in memory or not (tests/unit/test_frames.py,
and tests/integration/test_step_equivalence.py with a budget of 0).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from greenloop.steps import Batch
from tasks.handoff import nbytes

DEFAULT_BUDGET_MB = 1024


def budget_bytes() -> int:
    return int(float(os.environ.get("GREENLOOP_FRAME_CACHE_MB", DEFAULT_BUDGET_MB)) * 2**20)


class FrameCache:
    """Materialized batches by key, least recently used dropped first beyond the budget
    (the one just asked for always stays). Thread-safe: fleet threads share it."""

    def __init__(self, max_bytes: Callable[[], int] = budget_bytes) -> None:
        self._max_bytes = max_bytes
        self._held: OrderedDict[Hashable, tuple[Batch, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.loads = 0  # batches materialized (read back or handed over), for tests

    def get(self, key: Hashable, make: Callable[[], Batch]) -> Batch:
        with self._lock:
            held = self._held.get(key)
            if held is not None:
                self._held.move_to_end(key)
                return held[0]
        batch = make()  # outside the lock: a read of one batch does not stall the others
        # The frame, and its train and holdout cuts once a step asks for them.
        size = 2 * nbytes(batch.frame)
        with self._lock:
            self.loads += 1
            if key in self._held:
                self._bytes -= self._held.pop(key)[1]
            self._held[key] = (batch, size)
            self._bytes += size
            budget = self._max_bytes()
            while len(self._held) > 1 and self._bytes > budget:
                self._bytes -= self._held.popitem(last=False)[1][1]
        return batch

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._held)

    def clear(self) -> None:
        with self._lock:
            self._held.clear()
            self._bytes = 0


FRAMES = FrameCache()


def _held(name: str) -> property:
    return property(lambda self: getattr(self._batch(), name))


class StoredBatch(Batch):
    """A batch whose frame is fetched from `FRAMES` at each use (one dictionary lookup
    while it is held; `materialize` reads it back when it is not)."""

    def __init__(self, seq: int, digest: str, key: Hashable,
                 materialize: Callable[[], Batch], cache: FrameCache = FRAMES) -> None:
        # Batch is a frozen dataclass: its fields are set as its own __init__ sets them.
        for name, value in (("seq", seq), ("digest", digest), ("_key", key),
                            ("_materialize", materialize), ("_cache", cache)):
            object.__setattr__(self, name, value)

    def _batch(self) -> Batch:
        return self._cache.get(self._key, self._materialize)

    # What a step reads from a batch, each taken from the held (or read-back) batch.
    frame = _held("frame")
    holdout_mask = _held("holdout_mask")
    train = _held("train")
    holdout = _held("holdout")

    def __repr__(self) -> str:
        return f"StoredBatch(seq={self.seq}, digest={self.digest[:12]})"
