"""`streamalloc worker`: the engine with Prometheus metrics and the HTTP edge."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streamalloc.api import HttpApi
from streamalloc.api.queries import AvailabilityRequest, AvailabilityService
from streamalloc.config import Settings
from streamalloc.kafka import admin_client
from streamalloc.metrics import PrometheusObserver
from streamalloc.runtime.members import Members
from streamalloc.runtime.runner import run_until_signalled
from streamalloc.stages.engine import Engine


def run_worker(settings: Settings, say: Callable[[str], None] = print) -> int:
    observer = PrometheusObserver()
    api = None
    service: AvailabilityService | None = None
    engine: Engine | None = None

    def ready() -> bool:
        return engine is not None and engine.worker.ready

    def availability(request: AvailabilityRequest) -> tuple[int, dict[str, Any]]:
        if service is None:
            return 503, {"error": "the worker is starting", "sku": request.sku}
        return service(request)

    if settings.http_port is not None:
        # Bound first: the advertised address (its port) goes into the group consumer's client.id.
        api = HttpApi(
            settings.http_host,
            settings.http_port,
            registry=observer.registry,
            ready=ready,
            availability=availability,
        )
        url = settings.advertised_url or f"http://{settings.http_host}:{api.port}"
        settings = settings.replace(advertised_url=url)
    engine = Engine(settings, observer)
    if api is not None and settings.advertised_url is not None:
        service = query_service(settings, engine)
        api.start()
        say(
            f"HTTP API on http://{settings.http_host}:{api.port} (/health, /ready, /metrics, "
            f"/availability/<sku>), advertised as {settings.advertised_url}"
        )
    say(f"worker of {settings.app_id} on {settings.bootstrap}: Ctrl-C or SIGTERM stops it cleanly")
    try:
        return run_until_signalled(engine)
    finally:
        if api is not None:
            api.stop()


def query_service(settings: Settings, engine: Engine) -> AvailabilityService:
    """The worker's answer to availability queries (api/queries.py)."""
    url = settings.advertised_url
    if url is None:
        raise ValueError("a query service needs the worker's advertised URL")
    return AvailabilityService(
        local=engine.query_availability,
        members=Members(admin_client(settings), settings.app_id),
        requests_topic=settings.topic("allocation-requests"),
        self_url=url,
        forwarding=settings.query_forwarding,
        known_channels=lambda: set(engine.tables_view().channels),
    )
