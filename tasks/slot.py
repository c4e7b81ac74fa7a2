"""A model's update slot (a Prefect global concurrency limit), taken without waiting.

Prefect's `concurrency()` context manager releases a slot through a new API client each
time (a coroutine on its own loop thread: a new HTTP client, TLS context and
connection). On the served path that release cost 22 ms of CPU per arrival, more than
the MLflow run of a skip. `held` takes the same limit through the same lease API, renews
the lease the same way and emits the same events, but through the client the caller
already holds: the served task worker's warm client, or the flow run's.
"""

from __future__ import annotations

import logging
import threading
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
RENEW_AT = 0.75  # of the lease, as Prefect renews its own leases

log = logging.getLogger("greenloop.slot")


@contextmanager
def held(name: str, lease_seconds: float = 300.0) -> Iterator[None]:
    """Hold one slot of limit `name` for the block, or raise
    `ConcurrencySlotAcquisitionError` at once if none is free. Without the limit (a
    flow run outside `serve`), the block runs without one, as Prefect's `strict=False`."""
    with get_client(sync_client=True) as client:
        try:
            response = client.increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=lease_seconds)
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
            client.release_concurrency_slots_with_lease(granted.lease_id)
            emit_concurrency_release_events(granted.limits, 1, events)


def _renew(client: Any, lease_id: UUID, lease_seconds: float, stop: threading.Event) -> None:
    """Keep the lease alive while the block runs (a long full retrain): a lease that
    expires frees the slot on the server while the update still runs."""
    while not stop.wait(lease_seconds * RENEW_AT):
        try:
            client.renew_concurrency_lease(lease_id=lease_id, lease_duration=lease_seconds)
        except Exception as e:  # noqa: BLE001 - the update goes on; the model lock still holds
            log.warning("could not renew the update slot's lease %s: %s", lease_id, e)
            return
