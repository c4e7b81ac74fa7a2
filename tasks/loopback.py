"""Talking to a Prefect server on this machine without paying for a network in between.

HTTP/1.1 through `http.client`, for the two slot requests every served arrival makes.

httpx's default transport parses HTTP in pure Python (h11, httpcore's pool): a small
POST to a server on 127.0.0.1 cost ~1.3 ms of CPU in the client against ~0.4 ms
through one kept-alive `http.client` connection (measured 7 Dec, 400 requests each, the
same server). The request is the one Prefect's httpx client builds (its base URL, its
headers, auth included); only the transport differs. It is used only where nothing sits
between the client and the server: a plain `http://` URL on a loopback address, httpx's
default transport, no proxy mounted, no cookie set. Anything else keeps httpx's.

Prefect's events over a websocket without per-message compression (`local_events_plain`).
"""

from __future__ import annotations

import functools
import http.client
import select
import threading
from typing import Any
from urllib.parse import urlparse

import httpx

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class LoopbackTransport(httpx.BaseTransport):
    """One kept-alive connection per thread and server (`http.client` is not
    thread-safe; `serve` takes slots from its arrival thread and fleet threads)."""

    def __init__(self, timeout_seconds: float | None) -> None:
        self._timeout_seconds = timeout_seconds
        self._local = threading.local()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        conn = self._connection(url.host, url.port or 80)
        headers = dict(request.headers)
        headers["accept-encoding"] = "identity"  # the body is handed over as it came
        try:
            conn.request(request.method, url.raw_path.decode("ascii"), body=request.read(),
                         headers=headers)
            answer = conn.getresponse()
            content = answer.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise httpx.TransportError(f"{type(e).__name__}: {e}") from e
        if answer.will_close:
            conn.close()
        return httpx.Response(answer.status, headers=answer.getheaders(), content=content,
                              request=request)

    def _connection(self, host: str, port: int) -> http.client.HTTPConnection:
        kept: dict[tuple[str, int], http.client.HTTPConnection] = self._local.__dict__
        conn = kept.get((host, port))
        if conn is None:
            conn = kept[(host, port)] = http.client.HTTPConnection(
                host, port, timeout=self._timeout_seconds)
        elif conn.sock is not None and select.select([conn.sock], [], [], 0)[0]:
            # Readable while idle: the server closed it (uvicorn drops a connection idle
            # for 5 s). Reconnect before sending, as httpcore does, rather than send a
            # request that may or may not have been read.
            conn.close()
        return conn

    def close(self) -> None:
        for conn in self._local.__dict__.values():
            conn.close()


_TRANSPORTS: dict[float | None, LoopbackTransport] = {}  # by read timeout
_LOCK = threading.Lock()


def transport_for(http: Any) -> httpx.BaseTransport | None:  # noqa: ANN401 - httpx.Client
    """The loopback transport for requests through Prefect's httpx client `http`, or None
    where httpx must send them itself."""
    url = http.base_url
    if url.scheme != "http" or url.host not in LOOPBACK or http.cookies:
        return None
    default = getattr(http, "_transport", None)
    pick = getattr(http, "_transport_for_url", None)
    if type(default) is not httpx.HTTPTransport or pick is None or pick(url) is not default:
        return None  # a test's mock, a proxy, a mounted transport: httpx's path
    timeout_seconds = http.timeout.read
    with _LOCK:
        found = _TRANSPORTS.get(timeout_seconds)
        if found is None:
            found = _TRANSPORTS[timeout_seconds] = LoopbackTransport(timeout_seconds)
        return found


def local_events_plain() -> None:
    """Prefect's events client deflates every event it sends (the websocket's
    permessage-deflate, on by default). Sent to a server on this machine that is CPU
    spent twice, by the client and by the server, to save no network: ~1 ms of the
    client's CPU per served arrival (five events: 4.3-4.7 against 5.5-5.7 ms a batch on
    Prefect's event loop thread, measured 7 Dec). Connections to a loopback address are
    opened without it; any other server is left as Prefect connects to it."""
    import prefect.events.clients as clients

    connect = getattr(clients, "websocket_connect", None)
    if connect is None or getattr(connect, "greenloop_plain_on_loopback", False):
        return

    @functools.wraps(connect)
    def plain_on_loopback(uri: str, **kwargs: Any) -> Any:  # noqa: ANN401 - websockets'
        if _loopback_websocket(uri):
            kwargs.setdefault("compression", None)
        return connect(uri, **kwargs)

    plain_on_loopback.greenloop_plain_on_loopback = True  # type: ignore[attr-defined]
    clients.websocket_connect = plain_on_loopback


def _loopback_websocket(uri: str) -> bool:
    parts = urlparse(uri)
    return parts.scheme == "ws" and parts.hostname in LOOPBACK
