"""The worker's HTTP server cannot be tied up by slow or vanishing clients."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from streamalloc.api import HttpApi


def _api(request_timeout_s: float = 10.0, max_connections: int = 64) -> HttpApi:
    api = HttpApi(
        "127.0.0.1",
        0,
        registry=CollectorRegistry(),
        ready=lambda: True,
        request_timeout_s=request_timeout_s,
        max_connections=max_connections,
    )
    api.start()
    return api


def _health(api: HttpApi) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{api.port}/health", timeout=5) as response:  # noqa: S310
        return int(response.status)


def _http_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("Thread-") and t.daemon)


def test_half_sent_requests_are_dropped_after_the_timeout_and_free_their_threads() -> None:
    api = _api(request_timeout_s=0.5, max_connections=100)
    before = _http_threads()
    slow = [socket.create_connection(("127.0.0.1", api.port)) for _ in range(50)]
    try:
        for s in slow:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finished
        assert _health(api) == 200  # served beside them
        deadline = time.monotonic() + 10
        while _http_threads() > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _http_threads() <= before, "threads of half-sent requests outlived the timeout"
        for s in slow:
            s.settimeout(2)
            assert s.recv(1024) == b""  # closed by the server
    finally:
        for s in slow:
            s.close()
        api.stop()


def test_connections_beyond_the_limit_get_503_at_once() -> None:
    api = _api(request_timeout_s=5, max_connections=4)
    held = [socket.create_connection(("127.0.0.1", api.port)) for _ in range(4)]
    try:
        for s in held:
            s.sendall(b"GET /health HTTP/1.1\r\n")
        time.sleep(0.3)  # the server accepted them and holds their slots
        extra = socket.create_connection(("127.0.0.1", api.port))
        extra.settimeout(2)
        extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = extra.recv(4096)
        extra.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503")
        assert json.loads(body) == {"error": "too many connections"}
    finally:
        for s in held:
            s.close()
    # the slots come back when the clients leave
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if _health(api) == 200:
                break
        except OSError:
            time.sleep(0.1)
    assert _health(api) == 200
    api.stop()


def test_a_client_that_leaves_mid_answer_prints_no_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    api = _api()
    try:
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", api.port))
            # RST on close: the answer's write fails with a connection error in the server
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            s.close()
        time.sleep(0.5)
        assert _health(api) == 200
    finally:
        api.stop()
    assert "Traceback" not in capfd.readouterr().err
