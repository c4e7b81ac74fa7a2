"""A model's update slot (a Prefect global concurrency limit), taken without waiting.

Prefect's `concurrency()` context manager releases a slot through a new API client each
time (a coroutine on its own loop thread: a new HTTP client, TLS context and
connection). On the served path that release cost 22 ms of CPU per arrival, more than
the MLflow run of a skip. `held` takes the same limit through the same lease API, renews
the lease the same way and emits the same events, but through the client the caller
already holds: the served task worker's warm client, or the flow run's.

A Prefect server on SQLite answers 503 to a slot request whose transaction met another
writer (SQLITE_BUSY_SNAPSHOT: the server's event and log writers are busy during an
arrival), and Prefect's client then sleeps 2 s or more before it retries: a two-second
stall on 10 of 100 served arrivals, measured here. The conflict is over as soon as the
other write commits, so a slot request is first retried at once, a few times.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import httpx
from prefect import get_client
from prefect.client.schemas.responses import ConcurrencyLimitWithLeaseResponse
from prefect.concurrency._events import (
    emit_concurrency_acquisition_events,
    emit_concurrency_release_events,
)
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError

LOCKED = 423  # the server's answer when every slot of the limit is taken
BUSY = 503  # the server's database was busy: retry
QUICK_RETRY_SECONDS = (0.005, 0.01, 0.02, 0.05, 0.1)  # then Prefect's own retries
RENEW_AT = 0.75  # of the lease, as Prefect renews its own leases

log = logging.getLogger("greenloop.slot")


@contextmanager
def held(name: str, lease_seconds: float = 300.0) -> Iterator[None]:
    """Hold one slot of limit `name` for the block, or raise
    `ConcurrencySlotAcquisitionError` at once if none is free. Without the limit (a
    flow run outside `serve`), the block runs without one, as Prefect's `strict=False`."""
    with get_client(sync_client=True) as client:
        body = {"names": [name], "slots": 1, "mode": "concurrency",
                "lease_duration": lease_seconds}
        try:
            response = _post(client, "/v2/concurrency_limits/increment-with-lease", body)
        except httpx.HTTPStatusError as e:
            if e.response.status_code == LOCKED:
                raise ConcurrencySlotAcquisitionError(f"every slot of {name!r} is taken") from e
            raise
        granted = ConcurrencyLimitWithLeaseResponse.model_validate(response.json())
        if not granted.limits:
            yield
            return
        events = emit_concurrency_acquisition_events(granted.limits, 1)
        stop = threading.Event()
        renewer = threading.Thread(target=_renew, name=f"greenloop-slot-{granted.lease_id}",
                                   args=(client, granted.lease_id, lease_seconds, stop),
                                   daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            _post(client, "/v2/concurrency_limits/decrement-with-lease",
                  {"lease_id": str(granted.lease_id)})
            emit_concurrency_release_events(granted.limits, 1, events)


def _post(client: Any, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST `body`, retried at once while the server's database is busy; then, or for
    any other failure, through Prefect's client as usual (its retries, its errors)."""
    http = client._client  # Prefect's httpx client: its base URL, auth and headers
    for pause_seconds in QUICK_RETRY_SECONDS:
        try:  # httpx.Client.send, not Prefect's override: that one sleeps 2 s to retry
            response = httpx.Client.send(http, http.build_request("POST", path, json=body))
        except httpx.TransportError:  # server restarting, connection reset: Prefect retries
            break
        if response.status_code < 300 or response.status_code == LOCKED:
            response.raise_for_status()  # a 423 raises here, as Prefect's client raises it
            return response
        if response.status_code != BUSY:
            break
        time.sleep(pause_seconds * random.uniform(1.0, 2.0))
    return client.request("POST", path, json=body)


def _renew(client: Any, lease_id: UUID, lease_seconds: float, stop: threading.Event) -> None:
    """Keep the lease alive while the block runs (a long full retrain): a lease that
    expires frees the slot on the server while the update still runs."""
    while not stop.wait(lease_seconds * RENEW_AT):
        try:
            client.renew_concurrency_lease(lease_id=lease_id, lease_duration=lease_seconds)
        except Exception as e:  # noqa: BLE001 - the update goes on; the model lock still holds
            log.warning("could not renew the update slot's lease %s: %s", lease_id, e)
            return
