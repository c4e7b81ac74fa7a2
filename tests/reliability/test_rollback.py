"""`greenloop rollback` moves the champion back, records why in the ledger's alias
history and as MLflow tags, and `greenloop status --history` lists it."""

from __future__ import annotations

import pytest

from tests.reliability.conftest import MODEL, Project, bootstrap

pytestmark = pytest.mark.integration


def test_rollback_to_previous_and_to_a_version(project: Project) -> None:
    bootstrap(project, batches=2)
    for i in range(3):  # fine-tune on every batch: promotions when they win
        project.cli("ingest", str(project.drop(project.batch(30 + i), f"u{i}.csv")))
    ledger = project.ledger()
    history = ledger.alias_history(MODEL)
    if len(history) < 2:  # make sure there is something to roll back to
        v = ledger.versions(MODEL)[-1]["version"]
        assert v != ledger.champion(MODEL)
        assert ledger.move_champion(MODEL, v, ledger.champion(MODEL), "test: a second champion")
        history = ledger.alias_history(MODEL)
    current, previous = history[-1]["version"], history[-1]["previous"]
    tracker = project.runtime().tracker

    code, out = project.cli("rollback", "--reason", "bad predictions reported")
    assert code == 0, out
    assert ledger.champion(MODEL) == previous
    assert tracker.champion(MODEL) == previous
    last = ledger.alias_history(MODEL)[-1]
    assert last["previous"] == current and "bad predictions reported" in last["reason"]
    assert last["reason"].startswith("rollback")
    tags = tracker.client.get_model_version(MODEL, str(previous)).tags
    assert "bad predictions reported" in tags["rollback_reason"]
    assert "rollback" in tracker.client.get_model_version(MODEL, str(current)).tags["rolled_back"]

    first = ledger.versions(MODEL)[0]["version"]
    if first != previous:
        code, out = project.cli("rollback", "--to", str(first))
        assert code == 0, out
        assert ledger.champion(MODEL) == tracker.champion(MODEL) == first

    code, out = project.cli("rollback", "--to", "999")
    assert code != 0 and "no version 999" in out

    code, out = project.cli("status", "--history")
    assert code == 0 and "alias history" in out and "rollback" in out


def test_rollback_without_a_champion_fails_cleanly(project: Project) -> None:
    code, out = project.cli("rollback")
    assert code != 0 and "no champion yet" in out
