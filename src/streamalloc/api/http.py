"""A small threaded HTTP server beside the worker loop (standard library only).

Routes: GET /health (process alive), GET /ready (owns partitions and restored them),
GET /metrics (Prometheus text), GET /availability/<sku>[?channel=C] (answered by a query
function the worker provides, api/queries.py: the owner's store, forwarded, or 421 with
the owner; 404 when the SKU is unknown).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streamalloc.api.queries import FORWARDED_HEADER, AvailabilityRequest

#: Returns (status, body) for a query.
AvailabilityQuery = Callable[[AvailabilityRequest], tuple[int, dict[str, Any]]]


class HttpApi:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        availability: AvailabilityQuery | None = None,
    ) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                api._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return  # quiet by default; the worker logs what matters

        self.registry = registry
        self.ready = ready
        self.availability = availability
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
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
            metrics = generate_latest(self.registry)
            request.send_response(200)
            request.send_header("Content-Type", CONTENT_TYPE_LATEST)
            request.send_header("Content-Length", str(len(metrics)))
            request.end_headers()
            request.wfile.write(metrics)
        elif path.startswith("/availability/") and self.availability is not None:
            channel = parse_qs(query).get("channel", [None])[-1]
            forwarded = request.headers.get(FORWARDED_HEADER) is not None
            sku = unquote(path.removeprefix("/availability/"))
            status, body = self.availability(AvailabilityRequest(sku, channel, forwarded))
            _send_json(request, status, body)
        else:
            _send_json(request, 404, {"error": f"no route {path}"})


def _send_json(request: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    request.send_response(status)
    request.send_header("Content-Type", "application/json")
    request.send_header("Content-Length", str(len(data)))
    request.end_headers()
    request.wfile.write(data)
