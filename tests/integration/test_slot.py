"""The update slot taken through the caller's client, against a real Prefect API."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
from prefect import get_client
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError

from flows.deploy import ensure_limit
from tasks import slot

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _active_slots(name: str) -> int:
    with get_client(sync_client=True) as client:
        return int(client.read_global_concurrency_limit_by_name(name).active_slots)


def _fresh_limit() -> str:
    name = f"greenloop-test-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_limit(name))
    asyncio.run(ensure_limit(name))  # a second serve start finds it: no error
    return name


def test_the_slot_is_held_for_the_block_and_refused_to_a_second_holder() -> None:
    name = _fresh_limit()
    with slot.held(name):
        assert _active_slots(name) == 1
        with pytest.raises(ConcurrencySlotAcquisitionError), slot.held(name):
            pytest.fail("a second holder must not get the slot")
    assert _active_slots(name) == 0


def test_the_slot_is_released_when_the_block_raises() -> None:
    name = _fresh_limit()
    with pytest.raises(RuntimeError, match="boom"), slot.held(name):
        raise RuntimeError("boom")
    assert _active_slots(name) == 0


def test_without_the_limit_the_block_runs_without_a_slot() -> None:
    ran = []
    with slot.held(f"greenloop-missing-{uuid.uuid4().hex[:8]}"):
        ran.append(True)
    assert ran == [True]


def test_the_lease_is_renewed_while_the_block_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full retrain can outlast the lease: it is renewed, as Prefect renews its own."""
    from prefect.client.orchestration import SyncPrefectClient

    renewals = []
    real = SyncPrefectClient.renew_concurrency_lease

    def counted(self: SyncPrefectClient, lease_id: uuid.UUID, lease_duration: float) -> object:
        response = real(self, lease_id=lease_id, lease_duration=lease_duration)
        renewals.append((threading.current_thread().name, response.status_code))
        return response

    monkeypatch.setattr(SyncPrefectClient, "renew_concurrency_lease", counted)
    monkeypatch.setattr(slot, "RENEW_AT", 0.005)  # every 0.3 s of a 60 s lease
    name = _fresh_limit()
    with slot.held(name, lease_seconds=60):
        time.sleep(1.2)
        assert _active_slots(name) == 1
    assert len(renewals) >= 2
    assert all(t == "greenloop-slot-renewal" and code == 204 for t, code in renewals)
    assert _active_slots(name) == 0


def test_arrivals_are_handed_over_through_one_client(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: object) -> None:
    """`arrival.delay` builds a new Prefect client (and TLS context) per call unless one
    bound to Prefect's run-sync loop is current: `serve` hands every arrival over through
    one. The task runs are created as before, scheduled for the task worker."""
    from prefect.client.orchestration import PrefectClient

    from flows import warm

    built = []
    real_init = PrefectClient.__init__

    def counted(self: PrefectClient, *args: object, **kwargs: object) -> None:
        built.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(PrefectClient, "__init__", counted)
    monkeypatch.setattr(warm, "_DELAY_CLIENT", None)
    futures = []
    for n in range(4):
        if n == 1:  # the first opened the shared client (and Prefect's events worker, once)
            built.clear()
        with warm._delay_client():
            futures.append(warm.arrival.delay(f"landing/b{n}.csv", "configs/x.yaml", None,
                                              None, uuid.uuid4().hex))
    assert built == []
    with get_client(sync_client=True) as client:
        states = [client.read_task_run(f.task_run_id).state for f in futures]
    assert all(s is not None and s.is_scheduled() for s in states)


def test_arrivals_start_no_thread_per_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each hold arms one shared renewal timer; none starts (and joins) a thread."""
    name = _fresh_limit()
    with slot.held(name):
        pass
    started: list[str] = []
    real = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start",
                        lambda self: started.append(self.name) or real(self))
    for _ in range(5):
        with slot.held(name):
            assert _active_slots(name) == 1
    assert [n for n in started if "slot" in n] == []
    assert _active_slots(name) == 0


def test_a_local_server_is_asked_through_http_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test server is on 127.0.0.1: both slot requests of a hold go through the
    loopback transport (tasks/loopback.py), and the server counts the slot as httpx's
    requests would have it counted."""
    from tasks import loopback

    sent: list[str] = []
    real = loopback.LoopbackTransport.handle_request

    def counted(self: loopback.LoopbackTransport, request: object) -> object:
        sent.append(request.url.path)  # type: ignore[attr-defined]
        return real(self, request)  # type: ignore[arg-type]

    monkeypatch.setattr(loopback.LoopbackTransport, "handle_request", counted)
    name = _fresh_limit()
    for _ in range(3):
        with slot.held(name):
            assert _active_slots(name) == 1
        assert _active_slots(name) == 0
    assert [p.rsplit("/", 1)[-1] for p in sent] == [
        "increment-with-lease", "decrement-with-lease"] * 3
