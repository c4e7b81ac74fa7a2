"""`fleet`: many models updated in one flow run, one Prefect task per model.

The task runner does the fan-out: `ThreadPoolTaskRunner` in this process by default,
or prefect-dask's `DaskTaskRunner` pointed at an existing Dask cluster
(`--dask-address tcp://host:8786`) to spread models over machines. Dask workers must
have greenloop installed and see the same project home (a shared filesystem) and the
same PREFECT_API_URL / MLFLOW_TRACKING_URI. There is no scheduler or queue of ours.

Per model the task ingests the complete files waiting in data/landing/<dataset>/ (in
modification order) and processes every accepted batch; with `replay_batches` it
instead feeds that many batches of the dataset's bundled stream (like `greenloop run
--max-batches`), which is how a fresh clone has something to update.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.replay import replay
from flows.update import update
from greenloop.data import BatchRejected
from greenloop.watch import is_candidate
from tasks.runtime import get_runtime


@task(name="update-model", cache_policy=NONE)
def update_one(config: str, policy: str | None, home: str | None,
               replay_batches: int | None) -> dict[str, Any]:
    rt = get_runtime(config, policy, home)
    if replay_batches:
        summary = replay.fn(config, policy, replay_batches, False, home)
        return {"model": rt.model_name, "pid": os.getpid(), "batches": summary["batches"],
                "decisions": summary["decisions"],
                "champion": rt.ledger.champion(rt.model_name)}
    landing = rt.ws.landing(rt.cfg.name)
    files = sorted((p for p in landing.glob("*") if p.is_file() and is_candidate(p)),
                   key=lambda p: (p.stat().st_mtime_ns, p.name)) if landing.is_dir() else []
    rejected, results = [], []
    for path in files:
        try:
            results += update.fn(config, str(path), policy, home)
        except BatchRejected as e:
            rejected.append(str(e))
    results += update.fn(config, None, policy, home)
    return {"model": rt.model_name, "pid": os.getpid(), "processed": len(results),
            "rejected": rejected,
            "decisions": [r["decision"] for r in results],
            "champion": rt.ledger.champion(rt.model_name)}


def task_runner(dask_address: str | None, max_workers: int | None = None) -> Any:
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    return ThreadPoolTaskRunner(max_workers=max_workers)


@flow(name="fleet", log_prints=True)
def fleet(configs: list[str], policy: str | None = None, home: str | None = None,
          replay_batches: int | None = None) -> list[dict[str, Any]]:
    configs = [str(Path(c).resolve()) for c in configs]
    for c in configs:
        # Create (migrate) the tracking store and experiments here, once: worker processes
        # meeting a fresh sqlite store at the same time would race on MLflow's migrations.
        get_runtime(c, policy, home).tracker  # noqa: B018
    futures = [update_one.submit(c, policy, home, replay_batches) for c in configs]
    return [f.result() for f in futures]


def run_fleet(configs: list[str], policy: str | None = None, home: str | None = None,
              replay_batches: int | None = None, dask_address: str | None = None,
              max_workers: int | None = None) -> list[dict[str, Any]]:
    runner = task_runner(dask_address, max_workers)
    return fleet.with_options(task_runner=runner)(configs, policy, home, replay_batches)
