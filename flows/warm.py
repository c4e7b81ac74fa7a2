"""Warm execution of arrivals: a Prefect background task served by a long-lived task worker.

A Prefect deployment run is a new Python process: importing torch, Prefect, MLflow,
Evidently and DVC there costs ~6 CPU-s before any work, and the loaded models, cached
frames and MLflow client are lost when it exits (issue 9 measured 15.4 CPU-s a batch).
Prefect's mechanism for work that must run warm is the task worker: `arrival.delay(...)`
creates a task run on the server, and a `TaskWorker` — in `greenloop serve`'s own
process, or `greenloop worker` processes on other machines — receives it over a
websocket and runs it in a thread of its long-lived process, where `tasks.runtime`
keeps everything warm. Each arrival is one task run, with its logs, in the Prefect UI.

When `serve` processes its arrivals itself (the default), the task worker is not needed to
carry them across processes: `start_local` runs `arrival` as a direct task call in one
long-lived thread instead. That is still one task run per arrival, with its logs, but
created client-side with its states sent as events, like a task in a flow: none of the
background task's API round trips, parameter and result files, websocket push, or the
serialising and rebuilding of Prefect's settings for each run (tasks.service meters it).
`greenloop serve --no-worker` keeps `delay` for `greenloop worker` processes elsewhere.

The four deployments (flows/deploy.py) stay: the schedules (scheduled update, full
retrain), manual runs from the UI, and event-triggered runs for arrivals reported by
`greenloop watch` beside a work pool. Those start cold by nature (a process per run).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from prefect.settings import get_current_settings

from flows.confine import confine
from flows.deploy import describe, update_with_slot
from greenloop.data import BatchRejected
from tasks.ingest import ingest_batch
from tasks.runtime import Runtime, get_runtime
from tasks.service import ServiceMeter

_METER: ServiceMeter | None = None  # set by `serve` in the process that meters itself


def use_meter(meter: ServiceMeter | None) -> None:
    global _METER
    _METER = meter


def _run_name() -> str:
    from prefect.runtime import task_run

    return f"arrival-{Path(task_run.parameters.get('path', '?')).stem}"


@task(name="arrival", task_run_name=_run_name, log_prints=True, retries=0)
def arrival(path: str, config: str, policy: str | None = None, home: str | None = None,
            arrival_id: str = "") -> dict[str, Any]:
    """One file in data/landing/<dataset>/: ingest it, then update the model with every
    pending batch. `arrival_id` makes each arrival its own task run (a task worker caches
    results by inputs, and the same path can arrive twice with new content)."""
    confine(config, home)  # a task run's parameters come from whoever holds the API
    rt = get_runtime(config, policy, home)
    meter = _METER
    if meter is None or not meter.is_open(arrival_id):
        return _arrive(rt, path)  # not handed over by this process's watcher: phases only
    start = rt.ledger.last_energy_id()
    out: dict[str, Any] = {"hash": None}
    try:
        out = _arrive(rt, path)
        return out
    finally:
        meter.end_later(arrival_id, lambda w: record_service_share(rt, out.get("hash"), start, w))


def _arrive(rt: Runtime, path: str) -> dict[str, Any]:
    try:
        ingested = ingest_batch.fn(rt, path)
    except BatchRejected as e:
        print(f"{Path(path).name}: rejected: {e}")
        return {"path": path, "rejected": str(e), "hash": None}
    results = update_with_slot(rt)
    for r in results:
        print(describe(r))
    if ingested.duplicate:
        print(f"{Path(path).name}: duplicate of batch {ingested.seq} ({ingested.status})")
    return {"path": path, "hash": ingested.digest, "seq": ingested.seq,
            "duplicate": ingested.duplicate, "results": results}


def record_service_share(rt: Runtime, digest: str | None, since_id: int, window: Any) -> None:
    """The arrival's whole window minus what its phases already recorded: the rest is the
    phase `service` (orchestration, the Prefect server's share), so the batch's ledger
    rows add up to everything the machine did for it."""
    phases = rt.ledger.energy_since(rt.model_name, since_id)
    rest = {"energy_kwh": max(window.energy_kwh - phases["energy_kwh"], 0.0),
            "emissions_kg": max(window.emissions_kg - phases["emissions_kg"], 0.0),
            "cpu_seconds": max(window.cpu_seconds - phases["cpu_seconds"], 0.0),
            "wall_seconds": max(window.wall_seconds - phases["wall_seconds"], 0.0)}
    rt.ledger.add_energy(rt.model_name, digest, "service", rest)
    run_id = rt.ledger.mlflow_run_id(rt.model_name, digest) if digest else None
    if run_id:
        rt.tracker.log_metrics(run_id, {
            "energy_kwh.service": rest["energy_kwh"], "cpu_seconds.service": rest["cpu_seconds"],
            "energy_kwh.whole": window.energy_kwh, "cpu_seconds.whole": window.cpu_seconds,
            "wall_seconds.whole": window.wall_seconds})


Arrival = tuple[str, str, str | None, str | None, str]  # arrival()'s arguments
_LOCAL: queue.Queue[Arrival] | None = None  # set by start_local: arrivals run here


class Activity:
    """Arrivals handed to the arrival thread and not finished, and when the last one
    finished: what `serve --idle-exit` reads to tell an idle service from a busy one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0
        self.last_done = time.monotonic()

    def begin(self) -> None:
        with self._lock:
            self.in_flight += 1

    def end(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.last_done = time.monotonic()

    def end_startup(self) -> None:
        """The service is up: its first idle stretch starts now, not at import."""
        with self._lock:
            self.last_done = time.monotonic()

    def idle_since(self) -> float | None:
        """monotonic() when the service last became idle; None while an arrival runs."""
        with self._lock:
            return None if self.in_flight else self.last_done


ACTIVITY = Activity()


def submit(path: Path, config: str, policy: str | None, home: str | None) -> None:
    """Hand one complete landing file over: to this process's arrival thread (start_local)
    or else to the task worker(s); with the service meter in this process, the arrival's
    window opens here, before the hand-over."""
    key = uuid.uuid4().hex
    metered = _METER is not None and _METER.begin(key)
    try:
        if _LOCAL is not None:
            ACTIVITY.begin()  # before the put: the thread may finish it at once
            _LOCAL.put((str(path), config, policy, home, key))
            return
        with _delay_client():
            arrival.delay(str(path), config, policy, home, key)
    except BaseException:
        if metered and _METER is not None:
            _METER.cancel(key)
        raise


_DELAY_CLIENT: Any = None  # the AsyncClientContext every `delay` of this process reuses
_DELAY_GUARD = threading.Lock()


@contextmanager
def _delay_client() -> Iterator[None]:
    """One async Prefect client for every `arrival.delay` of this process. `delay` creates
    the task run on Prefect's run-sync event loop through `get_client()`, which builds a
    new client, and with it a TLS context loading the CA bundle, for every call unless an
    async client bound to that loop is current: ~23 ms of CPU per arrival in `serve`,
    measured with py-spy. `get_client()` returns the current context's client only on the
    loop it was opened on, so it is opened there, once."""
    from prefect import get_client
    from prefect.context import AsyncClientContext
    from prefect.utilities.asyncutils import run_coro_as_sync

    global _DELAY_CLIENT
    with _DELAY_GUARD:
        if _DELAY_CLIENT is None:
            async def opened() -> Any:
                client = get_client()
                await client.__aenter__()  # binds it to the run-sync loop
                return client

            # model_construct: AsyncClientContext() would build another client
            _DELAY_CLIENT = AsyncClientContext.model_construct(client=run_coro_as_sync(opened()))
    token = AsyncClientContext.__var__.set(_DELAY_CLIENT)
    try:
        yield
    finally:
        AsyncClientContext.__var__.reset(token)


@contextmanager
def warm_client() -> Iterator[None]:
    """One Prefect API client for every task run started in this context. Without it,
    each top-level task run (every arrival) builds its own client, and with it an SSL
    context loading the CA bundle: ~15 ms of CPU per arrival, even for http://127.0.0.1."""
    from prefect.context import SyncClientContext

    with SyncClientContext.get_or_create():
        yield


def start_worker(limit: int = 1, on_error: Callable[[BaseException], None] = print
                 ) -> threading.Thread:
    """A TaskWorker serving `arrival` in a daemon thread of this process (its own event
    loop). `limit` arrivals run at once; 1 keeps every arrival's meter window its own."""
    from prefect.task_worker import TaskWorker

    def run() -> None:
        async def main() -> None:
            await TaskWorker(arrival, limit=limit).start()

        try:
            with warm_client():  # task runs copy this thread's context: one client for all
                asyncio.run(main())
        except BaseException as e:  # noqa: BLE001 - reported, the service keeps serving
            on_error(e)

    thread = threading.Thread(target=run, name="greenloop-task-worker", daemon=True)
    thread.start()
    return thread


# The task `serve` calls for its own arrivals. Nothing to cache or persist: an arrival's
# effects are in the ledger, DVC and MLflow (a task worker would persist its result).
# The storage is named although nothing is written to it: left unset, Prefect asks the
# server for its default result storage at every task run (one API round trip an
# arrival); this is the local folder that default resolves to when the server has none.
local_arrival = arrival.with_options(
    cache_policy=NONE, persist_result=False,
    result_storage=Path(get_current_settings().results.local_storage_path))


def start_local(on_error: Callable[[BaseException], None] = print,
                on_done: Callable[[str], None] = lambda path: None) -> threading.Thread:
    """Arrivals submitted in this process run here, one at a time, in a daemon thread that
    calls the `arrival` task directly (a task run of its own each, outside any flow).
    `on_done(path)` follows each arrival that returned; a failed one is its task run's
    Failed state and a line from `on_error`; the thread goes on with the next one."""
    global _LOCAL
    arrivals: queue.Queue[Arrival] = queue.Queue()

    def run() -> None:
        with warm_client():  # one Prefect client for every arrival's task run
            while True:
                args = arrivals.get()
                try:
                    local_arrival(*args)
                except BaseException as e:  # noqa: BLE001 - reported, the service keeps serving
                    on_error(e)
                else:
                    on_done(args[0])
                finally:
                    ACTIVITY.end()

    thread = threading.Thread(target=run, name="greenloop-arrivals", daemon=True)
    thread.start()
    _LOCAL = arrivals
    return thread
