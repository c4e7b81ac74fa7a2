"""Deployments: what `greenloop serve` puts on a Prefect server, per model.

    ingest-<dataset>            event `greenloop.batch.arrived` (the watcher), path from
                                the event payload -> validate, version, record, then emit
                                `greenloop.batch.accepted`
    update-<dataset>            event `greenloop.batch.accepted` -> every accepted,
                                unprocessed batch of the model, in arrival order
    scheduled-update-<dataset>  cron `schedule.update_cron` -> the same update
    full-retrain-<dataset>      cron `schedule.full_retrain_cron`, inactive unless
                                `schedule.full_retrain_active`

Ingest never waits for training: it only emits an event. All updates of one model
(event, cron or full retrain) take the global concurrency limit
`greenloop-update-<model>` (limit 1), so they run one at a time (see `update_model`).
Deployment names carry the dataset so one server can serve many models; triggers match
on the event's `greenloop.dataset` / `greenloop.model` resource labels.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import Flow, flow, get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.schedules import Cron

from flows.confine import confine
from flows.retrain import full_retrain
from flows.update import ingest, process_pending
from greenloop.config import GreenloopConfig, load_config
from tasks import slot
from tasks.events import ACCEPTED, ARRIVED, arrived_trigger_name
from tasks.landing import rescan
from tasks.runtime import Runtime, get_runtime

CODE_ROOT = Path(__file__).resolve().parents[1]  # the checkout holding flows/ and tasks/


def model_name(cfg: GreenloopConfig) -> str:
    return f"{cfg.name}-{cfg.policy.name}"  # as tasks.runtime.Runtime.model_name


def limit_name(model: str) -> str:
    return f"greenloop-update-{model}"


def _model(config: str, policy: str | None) -> str:
    cfg = load_config(config)
    return model_name(cfg.with_policy(policy) if policy else cfg)


@contextmanager
def one_update_at_a_time(config: str, policy: str | None) -> Iterator[None]:
    """Wait for the model's slot (scheduled and forced updates: they must run)."""
    # strict=False: without the limit (e.g. a flow run outside `serve`) this is a no-op.
    with concurrency(limit_name(_model(config, policy)), occupy=1, strict=False):
        yield


def update_with_slot(rt: Runtime) -> list[dict]:
    """Process every pending batch while holding the model's global concurrency slot
    (`greenloop-update-<model>`, limit 1). If another update holds it, return at once
    instead of holding a flow-run or task-run slot while waiting (so arrivals are never
    stuck behind queued updates): the holder processes until no accepted batch is left,
    releases, and checks once more, so a batch accepted while it held the slot is never
    stranded. Served arrivals (`flows/warm.py`) and the `update` deployment share it."""
    results: list[dict] = []
    while True:
        done = len(results)
        try:
            with slot.held(limit_name(rt.model_name)):
                while batch := process_pending(rt):
                    results += batch
        except ConcurrencySlotAcquisitionError:
            print("another update of this model is running: it processes the new batch")
            return results
        if len(results) == done or not rt.ledger.batches(rt.model_name, ("accepted",)):
            return results


def describe(r: dict) -> str:
    """One processed batch, as the logs of its run in the Prefect UI show it."""
    if r.get("failed"):
        return f"batch {r['seq']}: failed after {r.get('attempts')} attempt(s): {r.get('error')}"
    return (f"batch {r['seq']}: {r['decision']}"
            + (f" -> version {r['version']}" if r.get("version") else "")
            + (" (champion)" if r.get("promoted") else ""))


@flow(name="update", log_prints=True)
def update_model(config: str, policy: str | None = None, home: str | None = None) -> list[dict]:
    """The `update` flow as served by a deployment (events, cron, the UI): a landing
    rescan, then every pending batch under the model's slot (`update_with_slot`)."""
    confine(config, home)  # API callers can override the fixed parameters
    rt = get_runtime(config, policy, home)
    found = rescan(rt)
    if found:  # arrivals whose report was lost: ingested now, processed below
        print(f"rescan: {len(found)} landing file(s) had no ledger row: {', '.join(found[:5])}")
    results = update_with_slot(rt)
    for r in results:  # shown in the flow run's logs in the Prefect UI
        print(describe(r))
    if not results:
        print("nothing to process: no accepted batch is waiting")
    return results


@flow(name="full-retrain", log_prints=True)
def full_retrain_model(config: str, policy: str | None = None, home: str | None = None,
                       reason: str = "scheduled full retrain") -> list[dict]:
    confine(config, home)  # API callers can override the fixed parameters
    with one_update_at_a_time(config, policy):
        return full_retrain.fn(config, policy, home, reason)


async def ensure_limit(name: str, limit: int = 1) -> None:
    async with get_client() as client:
        try:  # read first: a create that fails logs a traceback in the server's log
            await client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        try:
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=limit))
        except ObjectAlreadyExists:
            pass


async def release_lost_slots(name: str) -> int:
    """Free the slots of limit `name` that no lease holds any more; returns how many.

    A Prefect server keeps concurrency leases in its memory: when it stops with a slot
    taken (serve SIGKILLed mid-update, its server stopped with it), the restarted server
    still counts the slot as active and has no lease left to expire, so every later
    update finds the model's slot taken and leaves its batch pending, forever. Call only
    on a server that was just started: nobody can hold a lease on it yet."""
    async with get_client() as client:
        try:
            limit = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return 0
        if not limit.active_slots:
            return 0
        await client.update_global_concurrency_limit(
            name, GlobalConcurrencyLimitUpdate(active_slots=0))
        return int(limit.active_slots)


def _specs(config: str | Path, policy: str | None,
           home: str | Path | None) -> list[tuple[Flow, dict[str, Any]]]:
    """The four deployments of one config as (flow, deployment options), with absolute
    paths as fixed parameters."""
    cfg = load_config(config)
    if policy:
        cfg = cfg.with_policy(policy)
    model = model_name(cfg)
    fixed = {"config": str(Path(config).resolve()), "policy": policy,
             "home": str(Path(home).resolve()) if home else None}
    tags = ["greenloop", cfg.name, model]
    s = cfg.schedule
    return [
        (ingest, dict(
            name=f"ingest-{cfg.name}", parameters=dict(fixed), tags=tags,
            description=f"Validate, version and record a batch arriving in "
                        f"data/landing/{cfg.name}/; emits {ACCEPTED}.",
            triggers=[DeploymentEventTrigger(
                name=arrived_trigger_name(cfg.name), expect={ARRIVED},
                match={"greenloop.dataset": cfg.name},
                parameters={"path": "{{ event.payload.path }}"})])),
        (update_model, dict(
            name=f"update-{cfg.name}", parameters=dict(fixed), tags=tags,
            description=f"Process every accepted, unprocessed batch of {model} in arrival order.",
            triggers=[DeploymentEventTrigger(
                name=f"{cfg.name}: batch accepted", expect={ACCEPTED},
                match={"greenloop.model": model})])),
        (update_model, dict(
            name=f"scheduled-update-{cfg.name}", parameters=dict(fixed), tags=tags,
            description=f"The same update on a fixed cadence ({s.update_cron}).",
            schedules=[Cron(s.update_cron, timezone="UTC")])),
        (full_retrain_model, dict(
            name=f"full-retrain-{cfg.name}", parameters=dict(fixed), tags=tags,
            description=f"Full retrain of {model} ({s.full_retrain_cron}); inactive unless "
                        "schedule.full_retrain_active.",
            schedules=[Cron(s.full_retrain_cron, timezone="UTC",
                            active=s.full_retrain_active)])),
    ]


def deployments(config: str | Path, policy: str | None = None,
                home: str | Path | None = None) -> list[RunnerDeployment]:
    """For `serve`: flow runs are subprocesses of the serving process."""
    return [f.to_deployment(**kw, entrypoint_type=EntrypointType.MODULE_PATH)
            for f, kw in _specs(config, policy, home)]


def _prepare(config: str | Path, policy: str | None, home: str | Path | None) -> None:
    cfg = load_config(config)
    if policy:
        cfg = cfg.with_policy(policy)
    asyncio.run(ensure_limit(limit_name(model_name(cfg))))
    # Create (migrate) the tracking store once, before parallel flow runs meet it.
    get_runtime(str(config), policy, str(home) if home else None).tracker  # noqa: B018


def _require_server() -> None:
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise RuntimeError("deployments need a Prefect server: set PREFECT_API_URL")


def deploy_to_pool(configs: list[str | Path], pool: str, policy: str | None = None,
                   home: str | Path | None = None) -> list[str]:
    """The same deployments on a work pool, for `prefect worker start --pool <pool>`
    processes (on this or other machines with this code at the same path and the same
    project home, e.g. a shared filesystem). Code is pulled from this checkout
    (`from_source` with a local folder: the worker runs flows with it as working folder).
    Creates the pool (type `process`) if it does not exist."""
    _require_server()
    asyncio.run(_ensure_pool(pool))
    names = []
    for config in configs:
        _prepare(config, policy, home)
        for f, kw in _specs(config, policy, home):
            entry = f"flows/{Path(f.fn.__code__.co_filename).name}:{f.fn.__name__}"
            remote = Flow.from_source(source=str(CODE_ROOT), entrypoint=entry)
            remote.deploy(**kw, work_pool_name=pool, build=False, push=False,
                          print_next_steps=False)
            names.append(f"{f.name}/{kw['name']}")
    return names


async def _ensure_pool(pool: str) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate

    async with get_client() as client:
        try:
            await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass


def prepared_deployments(configs: list[str | Path], policy: str | None = None,
                         home: str | Path | None = None) -> list[RunnerDeployment]:
    """The deployments of every config, with their concurrency limits created and the
    tracking store migrated: ready for `prefect.serve`."""
    _require_server()
    deps: list[RunnerDeployment] = []
    for config in configs:
        _prepare(config, policy, home)
        deps += deployments(config, policy, home)
    return deps


def serve_all(configs: list[str | Path], policy: str | None = None,
              home: str | Path | None = None, limit: int | None = None) -> None:
    """Register the deployments of every config, create the per-model limits, and run
    flow runs as subprocesses of this process until interrupted."""
    from prefect import serve

    serve(*prepared_deployments(configs, policy, home), limit=limit,
          print_starting_message=False)
