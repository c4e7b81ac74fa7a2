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

from greenloop.timer import RearmableTimer
from tasks import loopback

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
        RENEWALS.hold(client, granted.lease_id, lease_seconds)
        try:
            yield
        finally:
            RENEWALS.drop(granted.lease_id)
            _post(client, "/v2/concurrency_limits/decrement-with-lease",
                  {"lease_id": str(granted.lease_id)})
            emit_concurrency_release_events(granted.limits, 1, events)


def _post(client: Any, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST `body`, retried at once while the server's database is busy; then, or for
    any other failure, through Prefect's client as usual (its retries, its errors)."""
    http = client._client  # Prefect's httpx client: its base URL, auth and headers
    transport = loopback.transport_for(http)  # a server on this machine: http.client
    for pause_seconds in QUICK_RETRY_SECONDS:
        request = http.build_request("POST", path, json=body)
        try:  # httpx.Client.send, not Prefect's override: that one sleeps 2 s to retry
            response = (httpx.Client.send(http, request) if transport is None
                        else transport.handle_request(request))
        except httpx.TransportError:  # server restarting, connection reset: Prefect retries
            break
        if response.status_code < 300 or response.status_code == LOCKED:
            response.raise_for_status()  # a 423 raises here, as Prefect's client raises it
            return response
        if response.status_code != BUSY:
            break
        time.sleep(pause_seconds * random.uniform(1.0, 2.0))
    return client.request("POST", path, json=body)


class Renewals:
    """Keeps the leases this process holds alive while their blocks run (a long full
    retrain): a lease that expires frees the slot on the server while the update still
    runs. Renewed at RENEW_AT of the lease, as Prefect renews its own, from one timer
    thread per renewal interval: a thread started and joined per arrival cost ~3% of a
    served skip's wall time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # also held while renewing: a drop waits for it
        self._leases: dict[UUID, tuple[Any, float, float]] = {}  # client, lease s, interval
        self._timers: dict[float, RearmableTimer] = {}

    def hold(self, client: Any, lease_id: UUID, lease_seconds: float) -> None:
        interval = lease_seconds * RENEW_AT
        with self._lock:
            self._leases[lease_id] = (client, lease_seconds, interval)
            timer = self._timers.get(interval)
            if timer is None:
                timer = self._timers[interval] = RearmableTimer(
                    interval, self._renew, interval, name="greenloop-slot-renewal")
        # Already running for another lease held here: this one is renewed earlier
        # than RENEW_AT the first time, which only keeps it alive longer.
        timer.start()

    def drop(self, lease_id: UUID) -> None:
        with self._lock:
            _client, _seconds, interval = self._leases.pop(lease_id)
            if all(i != interval for _c, _s, i in self._leases.values()):
                self._timers[interval].stop()

    def _renew(self, interval: float) -> None:
        with self._lock:
            for lease_id, (client, seconds, i) in self._leases.items():
                if i != interval:
                    continue
                try:
                    client.renew_concurrency_lease(lease_id=lease_id, lease_duration=seconds)
                except Exception as e:  # noqa: BLE001 - the update goes on; the model lock holds
                    log.warning("could not renew the update slot's lease %s: %s", lease_id, e)


RENEWALS = Renewals()
