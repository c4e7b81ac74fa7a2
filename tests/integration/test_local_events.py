"""Prefect's events to a server on this machine go without websocket compression
(tasks/loopback.py), and still arrive; other servers keep Prefect's connection."""

from __future__ import annotations

import asyncio

import pytest

import flows  # noqa: F401 - installs the loopback events connection, as every flow run has it
from tasks import loopback

pytestmark = pytest.mark.usefixtures("prefect_harness")


async def _emit_one() -> list[str]:
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient

    async with PrefectEventsClient() as client:  # the test server, on 127.0.0.1
        await client.emit(Event(event="greenloop.test.emitted",
                                resource={"prefect.resource.id": "greenloop.test"}))
        websocket = client._websocket
        assert websocket is not None
        return [type(e).__name__ for e in websocket.protocol.extensions]


def test_events_to_a_local_server_are_sent_uncompressed(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.events.clients as clients

    assert asyncio.run(_emit_one()) == []  # sent, and the server took it uncompressed
    monkeypatch.setattr(clients, "websocket_connect", clients.websocket_connect.__wrapped__)
    assert asyncio.run(_emit_one()) == ["PerMessageDeflate"]  # Prefect's own connection


def test_only_a_plain_loopback_websocket_is_left_uncompressed() -> None:
    assert loopback._loopback_websocket("ws://127.0.0.1:4200/api/events/in")
    assert loopback._loopback_websocket("ws://localhost:4200/api/events/in")
    assert not loopback._loopback_websocket("wss://127.0.0.1:4200/api/events/in")
    assert not loopback._loopback_websocket("ws://10.1.2.3:4200/api/events/in")
    assert not loopback._loopback_websocket("wss://api.prefect.cloud/api/events/in")
