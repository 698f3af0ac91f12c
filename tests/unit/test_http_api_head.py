"""HEAD is answered on every route as GET is, without a body; no versions in the Server header."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from streamalloc.api import HttpApi
from streamalloc.api.queries import AvailabilityRequest

ROUTES = ["/health", "/ready", "/metrics", "/availability/SKU-1?channel=web", "/availability/NOPE", "/nope"]


def _availability(request: AvailabilityRequest) -> tuple[int, dict[str, Any]]:
    if request.sku == "NOPE":
        return 404, {"error": "unknown SKU"}
    return 200, {"sku": request.sku, "channel": request.channel, "available": 3}


@pytest.fixture(scope="module")
def api() -> Iterator[HttpApi]:
    registry = CollectorRegistry()
    Counter("example", "a series so /metrics has a body", registry=registry).inc()
    server = HttpApi("127.0.0.1", 0, registry=registry, ready=lambda: False, availability=_availability)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _raw(api: HttpApi, method: str, path: str) -> tuple[bytes, bytes]:
    """(head, what follows the blank line) of one request on its own connection."""
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as conn:
        conn.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _headers(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in fields.items() if k.lower() != "date"}


@pytest.mark.parametrize("path", ROUTES)
def test_head_answers_like_get_without_the_body(api: HttpApi, path: str) -> None:
    get_head, get_body = _raw(api, "GET", path)
    head_head, head_body = _raw(api, "HEAD", path)
    assert _headers(head_head) == _headers(get_head)
    assert int(_headers(get_head)[1]["content-length"]) == len(get_body) > 0
    assert head_body == b""


def test_head_through_a_client_gives_the_status_of_get(api: HttpApi) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    try:
        statuses = []
        for path in ROUTES:
            conn.request("HEAD", path)
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        conn.close()
    assert statuses == [200, 503, 200, 200, 404, 404]  # one kept-alive connection for all of them


@pytest.mark.parametrize(("method", "path"), [("GET", "/health"), ("HEAD", "/metrics"), ("POST", "/health")])
def test_the_server_header_names_no_version(api: HttpApi, method: str, path: str) -> None:
    head, _ = _raw(api, method, path)
    status, headers = _headers(head)
    assert status == (501 if method == "POST" else 200)
    assert headers["server"] == "streamalloc"
    assert "python" not in head.decode().lower()
