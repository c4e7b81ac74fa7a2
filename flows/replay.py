"""A historical stream replayed as arrivals: the `update` steps once per batch."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NONE

from flows.update import update
from greenloop.energy import RunMeter
from tasks.parent_run import finish_replay_run, start_replay_run
from tasks.reporting import progress, write_json
from tasks.runtime import get_runtime
from tasks.stream import prepare_stream, summarize


def _batch_run_name() -> str:
    from prefect.runtime import task_run

    return f"batch-{Path(task_run.parameters.get('path', '?')).stem}"


@task(name="batch", cache_policy=NONE, task_run_name=_batch_run_name)
def one_batch(config: str, path: str, policy: str | None, home: str | None) -> list[dict]:
    """One batch as one task run, its steps inline (tasks/quoted.py), the way
    `greenloop serve` runs an arrival: what a replay meters is what serving costs."""
    return update.fn(config, path=path, policy=policy, home=home)


@flow(name="replay")
def replay(config: str, policy: str | None = None, max_batches: int | None = None,
           restart: bool = False, home: str | None = None,
           summary_name: str = "summary.json", subflow_per_batch: bool = True) -> dict:
    """One batch = one `update` flow run (a subflow of this one), as `greenloop run` and
    a deployment run do. `subflow_per_batch=False`: one task run per batch with the steps
    inline, as a served arrival (`flows/warm.py`); a flow run costs ~0.1 s idle and over
    1 s a batch on a busy 2-core machine (profiled, issue 3)."""
    rt = get_runtime(config, policy, home)
    step = update if subflow_per_batch else one_batch
    if restart:
        rt.ledger.reset(rt.model_name)
    files = prepare_stream(rt)[:max_batches]
    run = RunMeter(rt.cfg.energy)
    rt.parent_run_id = start_replay_run(rt)
    status = "FAILED"
    try:
        with run:
            for path in progress(files, f"{rt.cfg.name} · {rt.policy_name}"):
                step(config, path=str(path), policy=policy, home=home)
        status = "FINISHED"
    finally:  # a failed attempt keeps its whole-run energy: a resumed run adds to it
        if run.reading is not None:
            rt.ledger.add_energy(rt.model_name, None, "run", run.reading.as_dict())
        summary = summarize(rt)
        finish_replay_run(rt, summary, status)
    write_json(rt.ws.reports / f"{rt.cfg.name}-{rt.policy_name}" / summary_name, summary)
    return summary
