"""The history a batch is handed is kept between reads and patched (greenloop/ledger_history.py):
after any sequence of the ledger's own writes, from this process or another connection, it
must be what a fresh query of the ledger says."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from greenloop import ledger_history
from greenloop.ledger import Ledger

MODELS = ("m1", "m2")


def fresh_history(path: Path, model: str, before: int) -> list[tuple]:
    """What the history was before it was kept: one query of the whole table."""
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT hash, seq, accepted_path, dvc_md5 FROM batches WHERE model=? AND seq<? AND "
            "accepted_path IS NOT NULL AND status IN ('accepted','processed') ORDER BY seq",
            (model, before)).fetchall()


def fresh_update_index(path: Path, model: str, seq: int) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT COUNT(*) FROM batches WHERE model=? AND status='processed' AND "
            "role='update' AND seq<?", (model, seq)).fetchone()[0]


def one_write(rng: random.Random, ledger: Ledger, n: int) -> None:
    """One of the writes a served model sees: an arrival, its acceptance (not always in
    order), its completion, a dead letter, a retry, a reset."""
    model = rng.choice(MODELS)
    rows = ledger.batches(model)
    kind = rng.choices(["receive", "accept", "process", "dead", "retry", "reset"],
                       [30, 30, 25, 6, 5, 1])[0]
    if kind == "receive" or not rows:
        ledger.receive(model, f"h{n}", f"src{n}", role=rng.choice(["update", "update",
                                                                    "bootstrap"]))
        return
    row = rng.choice(rows)
    if kind == "accept" and row.status == "received":
        ledger.update_batch(model, row.hash, status="accepted", accepted_path=f"acc/{row.hash}",
                            dvc_md5=rng.choice([None, f"md5-{n}"]), rows=10)
    elif kind == "process" and row.status == "accepted":
        ledger.complete_batch(model, row.hash, {"decision": "skip"})
    elif kind == "dead" and row.status == "accepted":
        ledger.dead_letter(model, row.hash, "boom")
    elif kind == "retry":
        ledger.retry_failed(model)
    elif kind == "reset":
        ledger.reset(model)


@pytest.mark.parametrize("log_rows", [ledger_history.CHANGES_KEPT, 6])
def test_kept_history_matches_the_ledger_after_any_writes(tmp_path: Path, monkeypatch,
                                                          log_rows: int) -> None:
    """With the log's default length, and with one so short that a reader often finds
    the rows it had not seen already dropped."""
    monkeypatch.setattr(ledger_history, "CHANGES_KEPT", log_rows)
    path = tmp_path / "ledger.sqlite"
    writer, reader = Ledger(path), Ledger(path)  # two processes' views of one ledger
    rng = random.Random(7)
    checked = 0
    for n in range(600):
        one_write(rng, rng.choice([writer, reader]), n)
        if n % 3:
            continue  # several writes between reads, as between two arrivals
        for ledger in (writer, reader):
            for model in MODELS:
                for before in (1, 5, 40, 10**6):
                    kept = [tuple(r) for r in ledger.history(model, before)]
                    assert kept == fresh_history(path, model, before), (n, model, before)
                    assert ledger.update_index(model, before) == \
                        fresh_update_index(path, model, before)
                    checked += len(kept)
    assert checked > 1000  # the histories compared were not all empty
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM batch_changes").fetchone()[0] <= log_rows


def test_history_is_read_whole_again_after_many_changes(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger, other = Ledger(path), Ledger(path)
    assert ledger.history("m", 10**6) == []
    for n in range(700):  # more changed batches than are patched one by one
        other.receive("m", f"h{n}", "src")
        other.update_batch("m", f"h{n}", status="accepted", accepted_path=f"acc/{n}")
    assert [r.seq for r in ledger.history("m", 10**6)] == list(range(1, 701))


def test_refused_retrains_counts_full_retrain_versions_that_never_served(
        tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    for seq, decision in enumerate(("retrain", "retrain", "finetune", "retrain", "retrain")):
        ledger.receive("m", f"{seq:064x}", "src")
        ledger.complete_batch("m", f"{seq:064x}", {}, {"version": seq + 1, "decision": decision,
                                                       "trained_through": seq})
    assert ledger.refused_retrains("m") == 4  # nothing promoted yet: every retrain refused
    assert ledger.move_champion("m", 1, None, "bootstrap")
    assert ledger.move_champion("m", 4, 1, "promoted")
    assert ledger.refused_retrains("m") == 2  # versions 2 and 5; 3 is a fine-tune
    assert ledger.refused_retrains("other") == 0
