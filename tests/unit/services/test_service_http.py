"""The services' HTTP edge answers HEAD on every route and names no versions in its headers."""

from __future__ import annotations

import asyncio
import http.client

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from streamalloc.services.http import ServiceHttp

PATHS = ("/health", "/ready", "/metrics", "/ats/web/A")
Exchange = tuple[int, dict[str, str], bytes]


async def _ats(_: web.Request) -> web.Response:
    return web.json_response({"ats": 4})


def _exchange(port: int, method: str, path: str) -> Exchange:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


async def _get_and_head() -> dict[str, tuple[Exchange, Exchange]]:
    registry = CollectorRegistry()
    Counter("example", "a series so /metrics has a body", registry=registry).inc()
    server = ServiceHttp("127.0.0.1", 0, registry=registry, ready=lambda: False, routes={"/ats/web/A": _ats})
    port = await server.start()
    try:
        return {
            path: (
                await asyncio.to_thread(_exchange, port, "GET", path),
                await asyncio.to_thread(_exchange, port, "HEAD", path),
            )
            for path in PATHS
        }
    finally:
        await server.stop()


def test_head_answers_like_get_without_a_body_and_the_server_header_names_no_version() -> None:
    answers = asyncio.run(_get_and_head())
    assert [answers[path][0][0] for path in PATHS] == [200, 503, 200, 200]
    for path, (get, head) in answers.items():
        (get_status, get_headers, get_body), (head_status, head_headers, head_body) = get, head
        assert head_status == get_status and get_body and head_body == b"", path
        assert head_headers["content-type"] == get_headers["content-type"], path
        assert get_headers["server"] == head_headers["server"] == "streamalloc", (path, get_headers)
