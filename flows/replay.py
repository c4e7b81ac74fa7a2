"""A historical stream replayed as arrivals: one `update` flow run per batch."""

from __future__ import annotations

from prefect import flow

from flows.update import update
from greenloop.energy import RunMeter
from tasks.reporting import progress, write_json
from tasks.runtime import get_runtime
from tasks.stream import prepare_stream, summarize


@flow(name="replay")
def replay(config: str, policy: str | None = None, max_batches: int | None = None,
           restart: bool = False, home: str | None = None,
           summary_name: str = "summary.json") -> dict:
    rt = get_runtime(config, policy, home)
    if restart:
        rt.ledger.reset(rt.model_name)
    files = prepare_stream(rt)[:max_batches]
    with RunMeter(rt.cfg.energy) as run:
        for path in progress(files, f"{rt.cfg.name} · {rt.policy_name}"):
            update(config, path=str(path), policy=policy, home=home)
    rt.ledger.add_energy(rt.model_name, None, "run", run.reading.as_dict())
    summary = summarize(rt)
    write_json(rt.ws.reports / f"{rt.cfg.name}-{rt.policy_name}" / summary_name, summary)
    return summary
