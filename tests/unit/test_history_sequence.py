"""The history a served batch's step is handed: made batch by batch as the step asks
(tasks/pipeline.py: History), and counted by binary search (greenloop/step.py)."""

from __future__ import annotations

import random
from types import SimpleNamespace

from greenloop.ledger import HistoryRef
from greenloop.step import seen_through
from tasks.pipeline import History


class Made:
    """A runtime whose `batch` records which batches were made."""

    def __init__(self) -> None:
        self.made: list[int] = []

    def batch(self, digest: str, seq: int, path: str, md5: str | None) -> SimpleNamespace:
        self.made.append(seq)
        return SimpleNamespace(seq=seq, digest=digest, path=path, md5=md5)


def _refs(seqs: list[int]) -> list[HistoryRef]:
    return [HistoryRef(f"h{s}", s, f"acc/{s}", None) for s in seqs]


def test_history_makes_only_the_batches_asked_for() -> None:
    rt = Made()
    history = History(rt, _refs(list(range(1, 1001))))  # type: ignore[arg-type]
    assert len(history) == 1000 and rt.made == []
    window = history[-8:]
    assert [b.seq for b in window] == list(range(993, 1001))
    assert history[0].seq == 1 and history[-1].path == "acc/1000"
    assert seen_through(history, 500) == 500
    assert len(rt.made) < 40  # the window, two items and a binary search's probes
    assert [b.seq for b in history] == list(range(1, 1001))  # all of it, when asked


def test_seen_through_counts_as_a_scan_does() -> None:
    rng = random.Random(5)
    for _ in range(200):
        seqs = sorted(rng.sample(range(1, 300), rng.randrange(0, 60)))
        history = [SimpleNamespace(seq=s) for s in seqs]
        for through in (None, 0, 1, *rng.sample(range(300), 5), 10**6):
            expected = 0 if through is None else sum(1 for s in seqs if s <= through)
            assert seen_through(history, through) == expected  # type: ignore[arg-type]
