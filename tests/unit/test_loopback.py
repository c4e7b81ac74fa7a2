"""The slot requests' http.client transport against a real HTTP server on 127.0.0.1:
the same request arrives as httpx sends it, a connection the server dropped while idle is
replaced before a request is sent on it, and anything not plainly local keeps httpx."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tasks import loopback


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn
    timeout = 0.3  # an idle connection is dropped, as uvicorn drops one after 5 s
    seen: list[tuple[str, str, dict[str, str], bytes, int]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        self.seen.append((self.command, self.path, dict(self.headers.items()), body,
                          self.client_address[1]))
        status = 423 if self.path.endswith("/locked") else 200
        answer = json.dumps({"path": self.path, "got": json.loads(body)}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Recorder.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}/api"
    finally:
        srv.shutdown()
        srv.server_close()


def _client(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"x-prefect-api-version": "0.8.4",
                                                    "authorization": "Basic dTpw"})


def test_the_request_arrives_as_httpx_sends_it(server: str) -> None:
    http = _client(server)
    transport = loopback.transport_for(http)
    assert transport is not None
    body = {"names": ["greenloop-update-m"], "slots": 1, "lease_duration": 300.0}
    by_httpx = httpx.Client.send(http, http.build_request("POST", "/v2/x", json=body))
    ours = transport.handle_request(http.build_request("POST", "/v2/x", json=body))
    assert (ours.status_code, ours.json()) == (by_httpx.status_code, by_httpx.json())
    (m1, p1, h1, b1, _), (m2, p2, h2, b2, _) = _Recorder.seen
    assert (m2, p2, b2) == (m1, p1, b1) and (m1, p1) == ("POST", "/api/v2/x")
    by_httpx_headers = {k.lower(): v for k, v in h1.items()}
    our_headers = {k.lower(): v for k, v in h2.items()}
    assert our_headers.pop("accept-encoding") == "identity"  # the body comes back as sent
    by_httpx_headers.pop("accept-encoding")
    assert our_headers == by_httpx_headers  # host, auth, API version, agent, length, type
    assert our_headers["authorization"] == "Basic dTpw"


def test_a_refusal_raises_as_httpx_raises_it(server: str) -> None:
    http = _client(server)
    transport = loopback.transport_for(http)
    assert transport is not None
    response = transport.handle_request(http.build_request("POST", "/v2/locked", json={}))
    with pytest.raises(httpx.HTTPStatusError) as e:
        response.raise_for_status()
    assert e.value.response.status_code == 423


def test_one_connection_is_kept_and_a_dropped_one_replaced_before_sending(server: str) -> None:
    http = _client(server)
    transport = loopback.transport_for(http)
    assert transport is not None
    for n in range(3):
        transport.handle_request(http.build_request("POST", "/v2/x", json={"n": n}))
    assert len({port for *_, port in _Recorder.seen}) == 1  # one connection, kept
    time.sleep(0.6)  # the server drops the idle connection
    response = transport.handle_request(http.build_request("POST", "/v2/x", json={"n": 3}))
    assert response.json()["got"] == {"n": 3}
    assert [json.loads(b)["n"] for *_, b, _ in _Recorder.seen] == [0, 1, 2, 3]  # none twice
    assert len({port for *_, port in _Recorder.seen}) == 2


def test_a_server_gone_is_a_transport_error(server: str) -> None:
    http = _client(server.replace(server.split(":")[-1].split("/")[0], "1"))  # port 1
    transport = loopback.transport_for(http)
    assert transport is not None
    with pytest.raises(httpx.TransportError):
        transport.handle_request(http.build_request("POST", "/v2/x", json={}))


def test_anything_not_plainly_local_keeps_httpx(server: str) -> None:
    assert loopback.transport_for(httpx.Client(base_url="https://127.0.0.1:1/api")) is None
    assert loopback.transport_for(httpx.Client(base_url="http://10.0.0.5:4200/api")) is None
    mocked = httpx.Client(base_url=server, transport=httpx.MockTransport(
        lambda r: httpx.Response(200)))
    assert loopback.transport_for(mocked) is None
    proxied = httpx.Client(base_url=server, mounts={
        "http://127.0.0.1": httpx.HTTPTransport(proxy="http://127.0.0.1:3128")})
    assert loopback.transport_for(proxied) is None
    with_cookie = _client(server)
    with_cookie.cookies.set("session", "x")
    assert loopback.transport_for(with_cookie) is None
