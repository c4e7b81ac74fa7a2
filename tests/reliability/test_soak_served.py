"""Soak of the served path (slow, minutes): `greenloop serve` with files dropped into
landing, random SIGKILLs at the fault points, poison batches, broken files, duplicates,
an MLflow outage and a deleted registered model; every arrival accounted for exactly once,
the champion loadable, ledger and MLflow agreeing.

Runs `python -m tests.reliability.soak_served` as a child (it makes itself a subreaper to
stop what a killed serve leaves behind: not something to do to the pytest process).
GREENLOOP_SERVED_SOAK_ARRIVALS sets the length (default 40: under 6 min on 2 cores).
The full 300-arrival figures are in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.conftest import MODEL, Project, bootstrap

ROOT = Path(__file__).resolve().parents[2]
# Random kills, plus one kill certain to happen in every serve process that reaches its
# 12th drift check, so even a short soak restarts serve at least once.
FAULTS = "random:0.004,drift:kill@12"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_served_soak_accounts_for_every_arrival(tmp_path: Path) -> None:
    arrivals = int(os.environ.get("GREENLOOP_SERVED_SOAK_ARRIVALS", "40"))
    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "tests.reliability.soak_served", "--home",
           str(tmp_path / "home"), "--arrivals", str(arrivals), "--seed", "7", "--faults",
           FAULTS, "--report", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=1700)
    assert done.returncode == 0 and out.exists(), done.stderr[-4000:]
    r = json.loads(out.read_text())
    print(json.dumps(r, indent=1))

    kinds = r["arrivals_by_kind"]
    assert sum(kinds.values()) == arrivals
    assert all(kinds.get(k, 0) >= 1 for k in ("good", "duplicate", "broken", "poison"))
    # Every dropped file ended exactly where its kind says, nothing lost or pending.
    assert r["lost"] == 0 and r["unexpected_outcomes"] == [], r["unexpected_outcomes"]
    assert r["accounted"] == {"processed": kinds["good"], "duplicate": kinds["duplicate"],
                              "quarantined": kinds["broken"], "failed": kinds["poison"]}
    assert r["poison_dead_lettered"] == kinds["poison"]
    assert r["quarantined_without_reason"] == []
    assert r["landing_files_with_neither"] == 0
    assert "0 file(s) in landing with no ledger or quarantine row" in r["status_line"]
    assert r["batches_with_two_versions"] == 0
    # The faults happened: serve killed and restarted, MLflow down, the model deleted.
    assert r["kills"] >= 1 and r["restarts"] >= r["kills"]
    assert r["outages"] and all(o["arrivals"] >= 1 for o in r["outages"])
    refused = r["deleted_model"]["refused_updates"]
    # Not processed against the emptied registry (a kill meanwhile may count an attempt).
    assert refused and all(x["status"] == "accepted" for x in refused)
    assert r["deleted_model"]["lineage_unchanged"]
    # Ledger and MLflow agree; the champion loads and predicts finite values.
    assert r["ledger_versions_not_in_mlflow_with_same_run"] == []
    assert r["champion_ledger"] == r["champion_mlflow_alias"] is not None
    assert r["champion_outputs_finite"] and r["champion_predictions"] > 0
    assert r["serve_stop_code"] == 0


def test_a_slot_held_by_a_killed_serve_does_not_stall_the_stream(project: Project) -> None:
    """Found by the served soak: serve SIGKILLed mid-update left the model's update slot
    taken in the Prefect server's database (its lease lived in the dead server's memory),
    so after the restart every arrival said "another update of this model is running"
    and its batch stayed pending forever. Serve frees such slots on its new server."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from flows.deploy import ensure_limit, limit_name, release_lost_slots
    from flows.warm import update_with_slot

    bootstrap(project, batches=2)
    name = limit_name(MODEL)

    async def lose_a_lease() -> None:  # what a restarted server holds after the kill
        await ensure_limit(name)
        async with get_client() as client:
            await client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(active_slots=1))

    asyncio.run(lose_a_lease())
    code, out = project.cli("ingest", str(project.drop(project.batch(9), "after-kill.csv")),
                            "--no-process")
    assert code == 0, out
    rt = project.runtime()
    assert update_with_slot(rt) == []  # the stall: the slot counts as taken
    assert asyncio.run(release_lost_slots(name)) == 1  # serve's start, on its new server
    done = update_with_slot(rt)
    assert [r["decision"] is not None for r in done] == [True]
    assert rt.ledger.batches(MODEL)[-1].status == "processed"
    assert asyncio.run(release_lost_slots(name)) == 0  # the update released its own slot


def test_serve_processes_at_start_what_the_last_serve_left_accepted(project: Project) -> None:
    """Found by the served soak: a batch left `accepted` by a killed serve waited for the
    next arrival or the scheduled update. Serve now processes it when it starts, before
    its runner and worker, with no new file dropped."""
    import time

    bootstrap(project, batches=2)
    code, out = project.cli("ingest", str(project.drop(project.batch(9), "left.csv")),
                            "--no-process")
    assert code == 0, out
    assert [b.status for b in project.ledger().batches(MODEL)][-1] == "accepted"
    serve = project.spawn("serve", "--no-watch")
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and serve.poll() is None:
            if project.ledger().batches(MODEL)[-1].status == "processed":
                break
            time.sleep(1)
        assert project.ledger().batches(MODEL)[-1].status == "processed"
    finally:
        serve.terminate()
        try:
            output = serve.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            serve.kill()
            output = serve.communicate()[0]
    assert "1 batch(es) accepted and not yet processed: processing them first" in output, \
        output[-3000:]
