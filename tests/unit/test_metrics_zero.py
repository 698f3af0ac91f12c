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
        for reason in ("decode", "validation", "too_large", "refused"):
            assert f'streamalloc_dead_letters_total{{reason="{reason}",topic="{topic}"}} 0.0' in text
    assert 'streamalloc_records_total{stage="intake"} 0.0' in text
    # before the channels table is read: the decisions of no known channel
    assert 'streamalloc_decisions_total{channel="",reason="insufficient_stock",type="rejected"} 0.0' in text
    assert 'streamalloc_decisions_total{channel="",reason="",type="allocated"} 0.0' in text
    for store in OrderStage(settings).stores:
        assert f'streamalloc_restored_records_total{{store="{store}"}} 0.0' in text
    # the first event moves the series that was there, rather than creating it at 1
    observer.on_decision("rejected", "insufficient_stock", "web")  # not a known channel yet
    text = generate_latest(observer.registry).decode()
    assert 'streamalloc_decisions_total{channel="",reason="insufficient_stock",type="rejected"} 1.0' in text


def test_the_channels_of_the_table_get_their_decision_series_at_zero_when_it_is_read() -> None:
    observer = PrometheusObserver()
    observer.on_channels(["web", "store"])
    text = generate_latest(observer.registry).decode()
    for channel in ("web", "store"):
        assert f'streamalloc_decisions_total{{channel="{channel}",reason="",type="allocated"}} 0.0' in text
        assert (
            f'streamalloc_decisions_total{{channel="{channel}",reason="waitlisted",type="backordered"}} 0.0'
            in text
        )
    observer.on_decision("allocated", None, "web")
    text = generate_latest(observer.registry).decode()
    assert 'streamalloc_decisions_total{channel="web",reason="",type="allocated"} 1.0' in text
