"""The series the alert rules rest on: consumer lag, last commit, restoring, stale locations."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import generate_latest

from streamalloc.kafka.stats import partition_lags
from streamalloc.metrics import PrometheusObserver

UNKNOWN = -1001


def _part(partition: int, **fields: Any) -> dict[str, Any]:
    base = {"partition": partition, "desired": True, "ls_offset": UNKNOWN, "hi_offset": UNKNOWN}
    base |= {"app_offset": UNKNOWN, "committed_offset": UNKNOWN, "lo_offset": UNKNOWN}
    return base | fields


def _stats(*parts: dict[str, Any], topic: str = "orders") -> str:
    return json.dumps({"topics": {topic: {"partitions": {str(p["partition"]): p for p in parts}}}})


def test_lag_counts_from_the_application_position_to_the_last_stable_offset() -> None:
    stats = _stats(
        # consumed up to 40 of 50 stable (the high watermark past it is an open transaction)
        _part(0, ls_offset=50, hi_offset=60, app_offset=40, committed_offset=30),
        # nothing consumed yet: from the committed offset
        _part(1, ls_offset=20, committed_offset=5),
        # never committed, nothing consumed: from the log start
        _part(2, ls_offset=9, lo_offset=4),
        # its end not known yet (not fetched): left out
        _part(3, committed_offset=7),
        # not assigned to us, and librdkafka's internal -1 queue: left out
        _part(4, desired=False, ls_offset=10, app_offset=0),
        _part(-1, ls_offset=10, app_offset=0),
    )
    assert partition_lags(stats) == {("orders", 0): 10, ("orders", 1): 15, ("orders", 2): 5}


def test_lag_ignores_the_consumers_own_committed_offset_when_it_has_consumed() -> None:
    # Commits go through the producer's transactions: the consumer's committed offset stays
    # where the assignment found it, so counting from it would show a lag that only grows.
    assert partition_lags(_stats(_part(0, ls_offset=1000, app_offset=1000, committed_offset=0))) == {
        ("orders", 0): 0
    }


def _metrics(observer: PrometheusObserver) -> list[str]:
    return generate_latest(observer.registry).decode().splitlines()


def test_the_lag_series_are_those_of_the_last_report_so_a_revoked_partition_disappears() -> None:
    observer = PrometheusObserver()
    observer.on_consumer_lag({("orders", 0): 3, ("inventory", 1): 0})
    lines = _metrics(observer)
    assert 'streamalloc_consumer_lag{partition="0",topic="orders"} 3.0' in lines
    assert 'streamalloc_consumer_lag{partition="1",topic="inventory"} 0.0' in lines
    observer.on_consumer_lag({("inventory", 1): 2})
    lines = _metrics(observer)
    assert not [line for line in lines if line.startswith('streamalloc_consumer_lag{partition="0"')]
    assert 'streamalloc_consumer_lag{partition="1",topic="inventory"} 2.0' in lines


def test_last_commit_starts_at_the_start_and_moves_with_each_commit() -> None:
    observer = PrometheusObserver()
    started = observer.last_commit._value.get()
    assert started > 1.7e9  # a Unix time, not 0: a fresh worker is not "silent since 1970"
    observer.on_commit(1, 1, 0.01)
    assert observer.last_commit._value.get() >= started


def test_restoring_is_one_while_a_restore_runs() -> None:
    observer = PrometheusObserver()
    assert "streamalloc_restoring 0.0" in _metrics(observer)
    observer.on_restoring(True)
    assert "streamalloc_restoring 1.0" in _metrics(observer)
    observer.on_restoring(False)
    assert "streamalloc_restoring 0.0" in _metrics(observer)


def test_a_location_is_stale_while_any_partition_here_sees_it_stale() -> None:
    observer = PrometheusObserver()
    observer.on_location_staleness(0, ["WH-1", "WH-2"], [])
    lines = _metrics(observer)
    assert 'streamalloc_location_stale{location="WH-1"} 0.0' in lines
    assert 'streamalloc_location_stale{location="WH-2"} 0.0' in lines
    observer.on_location_staleness(0, ["WH-1", "WH-2"], ["WH-2"])
    observer.on_location_staleness(1, ["WH-1", "WH-2"], [])
    assert 'streamalloc_location_stale{location="WH-2"} 1.0' in _metrics(observer)
    observer.on_location_staleness(0, ["WH-1", "WH-2"], [])
    assert 'streamalloc_location_stale{location="WH-2"} 0.0' in _metrics(observer)


def test_a_statistics_report_moves_the_statistics_timestamp() -> None:
    observer = PrometheusObserver()
    started = observer.statistics_at._value.get()
    assert started > 1.7e9  # the start: a worker not yet reporting is not "stuck since 1970"
    observer.on_consumer_lag({})
    assert observer.statistics_at._value.get() >= started


def test_a_known_locations_status_changes_are_exported_at_zero_before_the_first() -> None:
    observer = PrometheusObserver()
    observer.on_location_staleness(0, ["WH-1"], [])
    lines = _metrics(observer)
    for status in ("online", "offline", "stale"):
        assert f'streamalloc_location_status_changes_total{{location="WH-1",status="{status}"}} 0.0' in lines
    observer.on_location_status("WH-1", "offline")
    moved = 'streamalloc_location_status_changes_total{location="WH-1",status="offline"} 1.0'
    assert moved in _metrics(observer)
