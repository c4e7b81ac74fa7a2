"""`fleet`: the three bundled datasets' models updated in one flow run, one task per model,
on Prefect's ThreadPoolTaskRunner and on prefect-dask's DaskTaskRunner (a LocalCluster
standing in for an existing cluster at a tcp:// address)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.services import ledger_rows, project_home

pytestmark = [pytest.mark.scale, pytest.mark.slow]

DATASETS = ("elec2", "weather", "bikes")


def _bundled_configs(home: Path) -> list[str]:
    return [str(home / "configs" / f"{d}.yaml") for d in DATASETS]


def _check(home: Path, results: list[dict], batches: int) -> None:
    assert sorted(r["model"] for r in results) == sorted(f"{d}-gated" for d in DATASETS)
    for r in results:
        assert r["champion"] is not None, r  # each model was bootstrapped and is in service
        processed = ledger_rows(home, "SELECT count(*) FROM batches WHERE model=? AND "
                                      "status='processed'", (r["model"],))
        assert processed[0][0] == batches


async def _runs_of_one_fleet_flow() -> tuple[list, list]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        flows = [r for r in await client.read_flow_runs() if r.name and r.flow_id]
        fleet = [r for r in flows if (await client.read_flow(r.flow_id)).name == "fleet"]
        tasks = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in fleet])))
        return fleet, [t for t in tasks if t.name.startswith("update-model")]


@pytest.fixture
def harness():  # noqa: ANN201
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_fleet_updates_three_models_in_one_flow_on_threads(tmp_path: Path, harness) -> None:
    from flows.fleet import run_fleet
    from tasks.runtime import forget_runtimes

    home = project_home(tmp_path, DATASETS)
    try:
        results = run_fleet(_bundled_configs(home), home=str(home), replay_batches=5)
    finally:
        forget_runtimes()
    _check(home, results, 5)
    assert {r["pid"] for r in results} == {os.getpid()}  # threads of this process
    fleet, tasks = asyncio.run(_runs_of_one_fleet_flow())
    assert len(fleet) == 1 and fleet[0].state.is_completed()
    assert len(tasks) == 3 and all(t.state.is_completed() for t in tasks)


def test_fleet_on_a_dask_cluster_address(tmp_path: Path, harness) -> None:
    pytest.importorskip("prefect_dask")
    from distributed import LocalCluster

    from flows.fleet import run_fleet

    home = project_home(tmp_path, DATASETS)
    with LocalCluster(host="127.0.0.1", n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        results = run_fleet(_bundled_configs(home), home=str(home), replay_batches=5,
                            dask_address=address)
    _check(home, results, 5)
    assert all(r["pid"] != os.getpid() for r in results)  # ran in the cluster's workers
    fleet, tasks = asyncio.run(_runs_of_one_fleet_flow())
    assert len(fleet) == 1 and fleet[0].state.is_completed()
    assert len(tasks) == 3 and all(t.state.is_completed() for t in tasks)
