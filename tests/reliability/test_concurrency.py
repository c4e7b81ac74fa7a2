"""Duplicates and concurrency: the same file twice, 10 copies at once, 20 batches within
a second -> each processed exactly once, in arrival order, under the model's locks."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from greenloop.ledger import Ledger
from tests.reliability.conftest import MODEL, Project, bootstrap

pytestmark = pytest.mark.integration


def in_threads(n: int, fn: Callable[[int], object]) -> list[object]:
    """Run fn(0..n-1) in n threads released together; re-raise the first error."""
    barrier, results, errors = threading.Barrier(n), [None] * n, []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    if errors:
        raise errors[0]
    return results


def process_pending(p: Project) -> list[dict]:
    """The body of the `update` flow: every accepted batch, in seq order."""
    from flows.update import process

    rt = p.runtime()
    return [process(rt, row) for row in rt.ledger.batches(MODEL, ("accepted",))]


def mlflow_runs(p: Project, digest: str) -> int:
    rt = p.runtime()
    runs = rt.tracker.client.search_runs([rt.tracker.experiment_id],
                                         filter_string=f"tags.batch_hash = '{digest}'")
    return len(runs)


def test_same_file_twice_in_a_row(project: Project) -> None:
    path = project.drop(project.batch(0), "b0.csv")
    assert project.cli("ingest", str(path))[0] == 0
    code, out = project.cli("ingest", str(path))  # the same file again
    assert code == 0 and "nothing new to process" in out, out
    copy = project.drop(project.batch(0), "b0-copy.csv")  # same bytes, another name
    assert project.cli("ingest", str(copy))[0] == 0

    ledger = project.ledger()
    rows = ledger.batches(MODEL)
    assert [r.status for r in rows] == ["processed"]
    assert ledger.duplicates(MODEL) == 2
    assert mlflow_runs(project, rows[0].hash) == 1


def test_ten_copies_at_once(project: Project) -> None:
    from tasks.ingest import ingest_batch

    bootstrap(project)
    paths = [project.drop(project.batch(20), f"copy-{i}.csv") for i in range(10)]
    rt = project.runtime()
    results = in_threads(10, lambda i: ingest_batch.fn(rt, str(paths[i])))
    assert sum(not r.duplicate for r in results) == 1
    assert len({r.digest for r in results}) == 1
    digest = results[0].digest

    in_threads(3, lambda i: process_pending(project))  # three updates at once

    ledger = project.ledger()
    assert ledger.batch(MODEL, digest).status == "processed"
    assert ledger.duplicates(MODEL) == 9
    assert mlflow_runs(project, digest) == 1
    trained = [v for v in ledger.versions(MODEL) if v["batch_hash"] == digest]
    assert len(trained) == 1


@pytest.mark.slow  # 20 updates with training: ~20 s on a quiet 2-core machine
def test_twenty_batches_within_a_second(project: Project) -> None:
    """20 arrivals and 20 updates racing: each batch once, in arrival (seq) order, and
    no two updates interleave (each batch's metered phases are contiguous)."""
    from tasks.ingest import ingest_batch

    bootstrap(project, batches=2)
    paths = [project.drop(project.batch(100 + i), f"burst-{i:02d}.csv") for i in range(20)]
    rt = project.runtime()

    def arrive_and_update(i: int) -> None:
        ingest_batch.fn(rt, str(paths[i]))
        process_pending(project)

    in_threads(20, arrive_and_update)

    ledger = project.ledger()
    rows = ledger.batches(MODEL)
    assert len(rows) == 22 and all(r.status == "processed" for r in rows)
    burst = rows[2:]
    received = [ledger._conn.execute("SELECT received_at, updated_at FROM batches WHERE hash=?",
                                     (r.hash,)).fetchone() for r in burst]
    assert [r[0] for r in received] == sorted(r[0] for r in received)  # seq = arrival order
    assert [r[1] for r in received] == sorted(r[1] for r in received)  # processed in order
    for r in burst:
        assert mlflow_runs(project, r.hash) == 1
    phases = [h for (h,) in ledger._conn.execute(
        "SELECT hash FROM energy WHERE model=? AND hash IS NOT NULL ORDER BY id", (MODEL,))]
    blocks = [h for i, h in enumerate(phases) if i == 0 or phases[i - 1] != h]
    assert len(blocks) == len(set(blocks))  # no batch's phases interleaved with another's
    order = {r.hash: r.seq for r in rows}
    assert [order[h] for h in blocks] == sorted(order[h] for h in blocks)
    history = ledger.alias_history(MODEL)
    for before, after in zip(history, history[1:], strict=False):
        assert after["previous"] == before["version"]  # every move was a CAS on the last


def test_alias_moves_only_by_compare_and_swap(project: Project) -> None:
    """A candidate trained against a champion that has since changed is not promoted."""
    bootstrap(project, batches=2)
    ledger = project.ledger()
    champion = ledger.champion(MODEL)
    assert not ledger.move_champion(MODEL, 99, champion - 1 if champion else 0, "stale")
    assert ledger.champion(MODEL) == champion
    path = project.drop(project.batch(40), "stale.csv")
    from tasks.ingest import ingest_batch

    digest = ingest_batch.fn(project.runtime(), str(path)).digest
    moved = ledger.complete_batch(MODEL, digest, {"decision": "finetune"},
                                  promote=(98, (champion or 0) + 1, "stale candidate"))
    assert not moved and ledger.champion(MODEL) == champion
    assert ledger.batch(MODEL, digest).status == "processed"


@pytest.mark.slow
def test_processes_race_on_twenty_batches_and_ten_copies(project: Project) -> None:
    """5 processes at once, 30 arrivals between them (20 batches, 10 copies of one):
    every batch processed once, copies dropped, in arrival order."""
    import os
    import subprocess
    import sys

    from tests.reliability.conftest import ROOT, prefect_api_url

    bootstrap(project, batches=2)
    files = [project.drop(project.batch(200 + i), f"p-{i:02d}.csv") for i in range(20)]
    files += [project.drop(project.batch(300), f"copy-{i:02d}.csv") for i in range(10)]
    shares = [[str(f) for f in files[w::5]] for w in range(5)]
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url(), "PYTHONPATH": str(ROOT)}
    env.pop("GREENLOOP_FAULTS", None)
    children = [subprocess.Popen([sys.executable, "-m", "tests.reliability.worker",
                                  str(project.config), str(project.home), *share], env=env,
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True) for share in shares]
    for child in children:
        out, _ = child.communicate(timeout=1500)
        assert child.returncode == 0, out

    ledger = project.ledger()
    rows = ledger.batches(MODEL)
    assert len(rows) == 2 + 21 and all(r.status == "processed" for r in rows)
    assert ledger.duplicates(MODEL) == 9
    for r in rows[2:]:
        assert mlflow_runs(project, r.hash) == 1
    done = [ledger._conn.execute("SELECT updated_at FROM batches WHERE hash=?",
                                 (r.hash,)).fetchone()[0] for r in rows]
    assert done == sorted(done)  # processed in arrival (seq) order
    champion = ledger.champion(MODEL)
    assert project.runtime().tracker.champion(MODEL) == champion


def _open_ledger(path: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        Ledger(Path(path))
        results.put("ok")
    except Exception as e:  # noqa: BLE001 - reported to the parent, which asserts
        results.put(f"{type(e).__name__}: {e}")


def test_processes_opening_a_new_ledger_at_once(tmp_path: Path) -> None:
    """Found by CI (a fleet on a dask cluster): eight processes creating the same ledger
    at once; switching it to WAL failed with "database is locked" without waiting (13
    of 30 trials before the fix). The children fork from a fork server, not from this
    process: by this point of the suite it runs threads (Prefect's, MLflow's, an idle
    arrival thread), and a plain fork copies whatever lock one of them holds (a CI run
    of the ninth session hung there: children blocked on SQLite's allocator mutex, taken
    by another thread of the parent at the fork)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__, "greenloop.ledger"])  # imported once, not per child
    failures = []
    for trial in range(15):
        path = tmp_path / f"t{trial}" / "state" / "ledger.sqlite"
        barrier, results = ctx.Barrier(8), ctx.Queue()
        # Daemons, killed if still there: a hung child must fail the test, not hang pytest.
        procs = [ctx.Process(target=_open_ledger, args=(str(path), barrier, results),
                             daemon=True) for _ in range(8)]
        try:
            for p in procs:
                p.start()
            outcomes = [results.get(timeout=120) for _ in procs]
            for p in procs:
                p.join(30)
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
        failures += [o for o in outcomes if o != "ok"]
    assert failures == []
