"""HTTP edge of a worker: health, readiness, Prometheus metrics, availability queries."""

from streamalloc.api.http import HttpApi

__all__ = ["HttpApi"]
