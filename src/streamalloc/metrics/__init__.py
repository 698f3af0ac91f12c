"""Prometheus metrics: an implementation of the runtime's Observer."""

from streamalloc.metrics.prometheus import PrometheusObserver

__all__ = ["PrometheusObserver"]
