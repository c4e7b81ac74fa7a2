"""The process's frames of accepted batches stay within their budget, least recently used
dropped first, and a dropped batch comes back as the batch it was."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from greenloop.steps import make_batch
from tasks.frames import FrameCache, StoredBatch
from tasks.handoff import nbytes


def _frame(seed: int, rows: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(size=rows), "y": rng.choice(["a", "b"], rows)})


def _stored(cache: FrameCache, seq: int, reads: list[int]) -> StoredBatch:
    digest = f"{seq:012x}" + "0" * 52

    def materialize():  # what Runtime.batch does: read the file, cut the holdout
        reads.append(seq)
        return make_batch(seq, digest, _frame(seq), 0.2)

    return StoredBatch(seq, digest, ("rt", digest), materialize, cache)


def test_least_recently_used_batches_are_dropped_beyond_the_budget() -> None:
    one = 2 * nbytes(_frame(0))  # a batch's frame and its train and holdout cuts
    cache = FrameCache(lambda: 3 * one)
    reads: list[int] = []
    batches = [_stored(cache, s, reads) for s in range(5)]
    for b in batches[:3]:
        b.frame  # noqa: B018
    batches[0].frame  # noqa: B018 - batch 0 is now the most recently used
    batches[3].frame  # noqa: B018 - over the budget: batch 1, the least recent, goes
    assert len(cache) == 3 and cache.nbytes == 3 * one
    assert reads == [0, 1, 2, 3]
    batches[0].train, batches[2].holdout  # noqa: B018 - held: not read again
    assert reads == [0, 1, 2, 3]
    batches[1].frame  # noqa: B018 - dropped: read back
    assert reads == [0, 1, 2, 3, 1]


def test_the_batch_asked_for_stays_even_over_the_budget() -> None:
    cache = FrameCache(lambda: 0)
    reads: list[int] = []
    a, b = _stored(cache, 1, reads), _stored(cache, 2, reads)
    assert len(a.frame) == 50 and len(cache) == 1
    b.frame  # noqa: B018
    assert len(cache) == 1 and reads == [1, 2]


def test_a_batch_read_back_is_the_batch_it_was() -> None:
    """Its rows, its holdout mask (drawn from its digest) and so its train and holdout."""
    cache = FrameCache(lambda: 0)
    reads: list[int] = []
    first, other = _stored(cache, 7, reads), _stored(cache, 8, reads)
    frame, mask = first.frame, first.holdout_mask
    train, holdout = first.train, first.holdout
    other.frame  # noqa: B018 - evicts batch 7
    assert reads == [7, 8]
    pd.testing.assert_frame_equal(first.frame, frame)
    assert reads == [7, 8, 7]
    np.testing.assert_array_equal(first.holdout_mask, mask)
    pd.testing.assert_frame_equal(first.train, train)
    pd.testing.assert_frame_equal(first.holdout, holdout)
    assert first.seq == 7 and repr(first).startswith("StoredBatch(seq=7")


def test_budget_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks import frames

    monkeypatch.setenv("GREENLOOP_FRAME_CACHE_MB", "0.5")
    assert frames.budget_bytes() == 2**19
    monkeypatch.delenv("GREENLOOP_FRAME_CACHE_MB")
    assert frames.budget_bytes() == frames.DEFAULT_BUDGET_MB * 2**20
