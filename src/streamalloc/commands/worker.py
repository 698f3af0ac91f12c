"""`streamalloc worker`: the engine with Prometheus metrics and the HTTP edge."""

from __future__ import annotations

from collections.abc import Callable

from streamalloc.api import HttpApi
from streamalloc.config import Settings
from streamalloc.metrics import PrometheusObserver
from streamalloc.runtime.runner import run_until_signalled
from streamalloc.stages.engine import Engine


def run_worker(settings: Settings, say: Callable[[str], None] = print) -> int:
    observer = PrometheusObserver()
    engine = Engine(settings, observer)
    api = None
    if settings.http_port is not None:
        api = HttpApi(
            settings.http_host,
            settings.http_port,
            registry=observer.registry,
            ready=lambda: engine.worker.ready,
        )
        api.start()
        say(f"HTTP API on http://{settings.http_host}:{api.port} (/health, /ready, /metrics)")
    say(f"worker of {settings.app_id} on {settings.bootstrap}: Ctrl-C or SIGTERM stops it cleanly")
    try:
        return run_until_signalled(engine)
    finally:
        if api is not None:
            api.stop()
