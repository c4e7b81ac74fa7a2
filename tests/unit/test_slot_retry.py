"""The slot request's quick retry while a Prefect server's SQLite database is busy."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tasks import slot


class _Client:
    """What `_post` uses of a SyncPrefectClient: its httpx client, and `request` (the
    path with Prefect's own retries), here recorded instead of sent."""

    def __init__(self, answers: list[int]) -> None:
        self.sent: list[str] = []
        self.fallbacks: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            self.sent.append(request.url.path)
            return httpx.Response(answers.pop(0), json={"lease_id": "x", "limits": []})

        self._client = httpx.Client(base_url="http://127.0.0.1:1/api",
                                    transport=httpx.MockTransport(handler))

    def request(self, method: str, path: str, **kwargs: Any) -> str:
        self.fallbacks.append(path)
        return "prefect's path"


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    t0 = time.perf_counter()
    return fn(), time.perf_counter() - t0


def test_a_busy_server_is_asked_again_at_once() -> None:
    client = _Client([503, 503, 200])
    response, seconds = _timed(lambda: slot._post(client, "/v2/x", {}))
    assert isinstance(response, httpx.Response) and response.status_code == 200
    assert client.sent == ["/api/v2/x"] * 3 and client.fallbacks == []
    assert seconds < 0.5  # Prefect's client would have slept 2 s or more


def test_a_server_still_busy_is_left_to_prefects_retries() -> None:
    client = _Client([503] * len(slot.QUICK_RETRY_SECONDS))
    assert slot._post(client, "/v2/x", {}) == "prefect's path"
    assert len(client.sent) == len(slot.QUICK_RETRY_SECONDS) and client.fallbacks == ["/v2/x"]


def test_a_taken_slot_raises_at_once_and_other_errors_go_to_prefect() -> None:
    with pytest.raises(httpx.HTTPStatusError) as e:
        slot._post(_Client([423]), "/v2/x", {})
    assert e.value.response.status_code == slot.LOCKED
    client = _Client([403])  # e.g. a CSRF token Prefect's client knows how to fetch
    assert slot._post(client, "/v2/x", {}) == "prefect's path"
    assert len(client.sent) == 1


def test_a_connection_error_is_left_to_prefects_retries() -> None:
    """A server restarting refuses the connection: Prefect's client retries that."""
    client = _Client([])

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client._client = httpx.Client(base_url="http://127.0.0.1:1/api",
                                  transport=httpx.MockTransport(refused))
    assert slot._post(client, "/v2/x", {}) == "prefect's path"
