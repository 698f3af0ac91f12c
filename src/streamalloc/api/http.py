"""A small threaded HTTP server beside the worker loop (standard library only).

Routes: GET /health (process alive), GET /ready (owns partitions and restored them),
GET /metrics (Prometheus text), GET /availability/<sku>[?channel=C] (answered by a query
function the worker provides, api/queries.py: the owner's store, forwarded, or 421 with
the owner; 404 when the SKU is unknown). HEAD answers every route as GET would, without
the body. The Server header names no versions.

A client cannot tie the server up: a request must arrive whole within `request_timeout_s`
(a half-sent one is dropped), at most `max_connections` are served at once (one more is
answered 503 at once), and a client that leaves mid-answer is noted at debug level, not
printed as a traceback.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streamalloc.api.queries import FORWARDED_HEADER, AvailabilityRequest

#: Returns (status, body) for a query.
AvailabilityQuery = Callable[[AvailabilityRequest], tuple[int, dict[str, Any]]]

_log = logging.getLogger("streamalloc.api.http")
_BUSY_BODY = b'{"error": "too many connections"}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` at once; quiet about clients that leave."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_connections: int
    ) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError, socket.timeout)):
            _log.debug("client left", extra={"client": str(client_address[0]), "error": type(error).__name__})
        else:
            _log.warning("request failed", exc_info=True)


class HttpApi:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        availability: AvailabilityQuery | None = None,
        request_timeout_s: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            timeout = request_timeout_s  # on the socket: a request that stops arriving is dropped

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                api._handle(self)

            def do_HEAD(self) -> None:  # noqa: N802
                api._handle(self)  # the same status and headers as GET; _send leaves out the body

            def version_string(self) -> str:
                return "streamalloc"  # no Python or library versions in the Server header

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return  # quiet by default; the worker logs what matters

        self.registry = registry
        self.ready = ready
        self.availability = availability
        self._server = _BoundedServer((host, port), Handler, max_connections)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-api", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        path, _, query = request.path.partition("?")
        path = path.rstrip("/")
        if path == "/health":
            _send_json(request, 200, {"status": "ok"})
        elif path == "/ready":
            ok = self.ready()
            _send_json(request, 200 if ok else 503, {"ready": ok})
        elif path == "/metrics":
            _send(request, 200, CONTENT_TYPE_LATEST, generate_latest(self.registry))
        elif path.startswith("/availability/") and self.availability is not None:
            channel = parse_qs(query).get("channel", [None])[-1]
            forwarded = request.headers.get(FORWARDED_HEADER) is not None
            sku = unquote(path.removeprefix("/availability/"))
            status, body = self.availability(AvailabilityRequest(sku, channel, forwarded))
            _send_json(request, status, body)
        else:
            _send_json(request, 404, {"error": f"no route {path}"})


def _send_json(request: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    _send(request, status, "application/json", json.dumps(body).encode())


def _send(request: BaseHTTPRequestHandler, status: int, content_type: str, data: bytes) -> None:
    request.send_response(status)
    request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(data)))
    request.end_headers()
    if request.command != "HEAD":
        request.wfile.write(data)
