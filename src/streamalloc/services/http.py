"""The services' HTTP edge on aiohttp (faust's own web server is off): health, readiness,
Prometheus metrics, and whatever queries a service adds. Every GET route answers HEAD too
(aiohttp's default); the Server header names no versions.

aiohttp runs on the service's event loop, so a query reads the service's tables without
locks: the agent and the handler never run at the same time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ServiceHttp:
    """GET /health, /ready, /metrics plus the service's routes, on host:port (0: a free port)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        routes: dict[str, Handler] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self._registry = registry
        self._ready = ready
        self._app = web.Application()
        self._app.on_response_prepare.append(_no_versions)
        self._app.router.add_get("/health", self._health)
        self._app.router.add_get("/ready", self._ready_view)
        self._app.router.add_get("/metrics", self._metrics)
        for path, handler in (routes or {}).items():
            self._app.router.add_get(path, handler)
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Listen; the port it listens on."""
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # noqa: SLF001 - aiohttp keeps the bound socket here
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _health(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _ready_view(self, _: web.Request) -> web.Response:
        ready = self._ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _no_versions(_: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "streamalloc"  # aiohttp's default names Python's and its own version
