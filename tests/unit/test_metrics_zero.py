"""Labelled counters show zero from the start, so `rate()` sees their first event."""

from __future__ import annotations

from prometheus_client import generate_latest

from streamalloc.config import Settings
from streamalloc.metrics import PrometheusObserver
from streamalloc.stages.intake import IntakeStage
from streamalloc.stages.order_stage import OrderStage


def test_dead_letters_records_and_decisions_are_exported_at_zero_before_any_event() -> None:
    settings = Settings()
    observer = PrometheusObserver()
    observer.on_stages([IntakeStage(settings), OrderStage(settings)])
    text = generate_latest(observer.registry).decode()
    for topic in IntakeStage(settings).topics():
        assert f'streamalloc_dead_letters_total{{topic="{topic}"}} 0.0' in text
    assert 'streamalloc_records_total{stage="intake"} 0.0' in text
    assert 'streamalloc_decisions_total{reason="insufficient_stock",type="rejected"} 0.0' in text
    assert 'streamalloc_decisions_total{reason="",type="allocated"} 0.0' in text
    for store in OrderStage(settings).stores:
        assert f'streamalloc_restored_records_total{{store="{store}"}} 0.0' in text
    # the first event moves the series that was there, rather than creating it at 1
    observer.on_decision("rejected", "insufficient_stock")
    text = generate_latest(observer.registry).decode()
    assert 'streamalloc_decisions_total{reason="insufficient_stock",type="rejected"} 1.0' in text
