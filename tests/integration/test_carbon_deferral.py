"""Carbon-aware deferral end to end: a non-urgent full retrain decided outside the
low-carbon window becomes a fine-tune (the batch is learned from, never dropped), the
deferral is recorded in the ledger, and the `full-retrain` flow carries it out."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from flows import call_flow
from flows.replay import replay
from flows.retrain import full_retrain
from greenloop.ledger import Ledger
from tests.conftest import drifting_stream, write_project

pytestmark = pytest.mark.integration


def test_retrain_outside_the_window_is_deferred_then_done_by_full_retrain(
        prefect_harness, home: Path) -> None:
    other_hour = (datetime.now(UTC).hour + 12) % 24  # a window we are surely not in
    config = write_project(home, drifting_stream(), overrides={
        "schedule": {"carbon_window_hours": [other_hour], "urgent_drift_share": 1.0}})
    call_flow(replay, str(config), None, None, False, str(home))

    ledger = Ledger(home / "state" / "ledger.sqlite")
    rows = {b.seq: b for b in ledger.batches("synth-gated")}
    assert len(rows) == 6 and all(b.status == "processed" for b in rows.values())
    assert not [b for b in rows.values() if b.role == "update" and b.decision == "retrain"]
    pending = ledger.pending_retrain("synth-gated")
    assert pending is not None
    deferred = rows[pending["seq"]]
    assert deferred.decision == "finetune" and deferred.version is not None  # learned from
    assert "deferred to the low-carbon window" in pending["reason"]
    assert f"[{other_hour}]" in pending["reason"]

    results = call_flow(full_retrain, str(config), None, str(home))
    assert [r["decision"] for r in results] == ["retrain"]
    assert ledger.pending_retrain("synth-gated") is None
    newest = ledger.versions("synth-gated")[-1]
    assert newest["decision"] == "retrain" and "deferred at batch" in newest["reason"]
    ledger.close()
