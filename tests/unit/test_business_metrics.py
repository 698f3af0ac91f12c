"""The worker's business metrics: decisions by channel, decision latency, stock totals, dead
letters by reason, and the process's own; pure, with the allocator in the stage harness."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from prometheus_client import generate_latest
from tests.unit.stages._inputs import (
    DEAD_LETTER,
    INVENTORY,
    REQUESTS,
    SETTINGS,
    T0,
    decoded,
    inventory,
    request,
)

from streamalloc.domain import Tables
from streamalloc.domain.tables import Channel
from streamalloc.errors import DeserializationError, ValidationError
from streamalloc.metrics import PrometheusObserver
from streamalloc.runtime.dead_letter import DeadLetters, failure_category
from streamalloc.runtime.observer import Observer, Reservations, StockSnapshot
from streamalloc.runtime.stage import Record
from streamalloc.stages.allocator import AllocatorStage
from streamalloc.stages.tables import location_of
from streamalloc.testing import ManualClock, StageHarness


class Recorder(Observer):
    def __init__(self) -> None:
        self.decisions: list[tuple[str, str | None, str]] = []
        self.latencies: list[float] = []
        self.channels: list[set[str]] = []
        self.dead_letters: list[tuple[str, str]] = []
        self.stock: dict[tuple[str, int], StockSnapshot] = {}
        self.placed: list[tuple[str, bool]] = []
        self.shipped: list[tuple[str, int]] = []

    def on_line_placed(self, channel: str, filled_first: bool) -> None:
        self.placed.append((channel, filled_first))

    def on_decision(self, kind: str, reason: str | None, channel: str) -> None:
        self.decisions.append((kind, reason, channel))

    def on_decision_latency(self, seconds: float) -> None:
        self.latencies.append(seconds)

    def on_channels(self, channels: Collection[str]) -> None:
        self.channels.append(set(channels))

    def on_dead_letter(self, topic: str, reason: str) -> None:
        self.dead_letters.append((topic, reason))

    def on_stock(self, stage: str, partition: int, stock: StockSnapshot) -> None:
        self.stock[(stage, partition)] = stock

    def on_shipped(self, location: str, units: int) -> None:
        self.shipped.append((location, units))


def _tables(*, waitlist: bool = False) -> Tables:
    return Tables(
        locations={lid: location_of({"location_id": lid, "priority": 1}) for lid in ("WH-1", "WH-2")},
        channels={
            "web": Channel(channel_id="web", waitlist=waitlist),
            "marketplace": Channel(channel_id="marketplace"),
        },
    )


def _allocator(observer: Observer, table: Tables | None = None) -> StageHarness:
    clock = ManualClock(T0)
    chosen = table or _tables()
    return StageHarness(AllocatorStage(SETTINGS, lambda: chosen, observer, clock=clock), clock=clock)


def _lines(observer: PrometheusObserver) -> list[str]:
    return generate_latest(observer.registry).decode().splitlines()


# --- decisions by type, reason and channel ---------------------------------------------------


def test_decisions_carry_the_lines_channel_and_the_allocator_tells_the_tables_channels() -> None:
    recorder = Recorder()
    harness = _allocator(recorder)
    harness.feed(INVENTORY, [(b"SKU-A", inventory("r1", "SKU-A", "WH-1", 1))])
    harness.feed(
        REQUESTS,
        [
            (b"SKU-A", request("o1", "1", "SKU-A", 1)),
            (b"SKU-A", request("o2", "1", "SKU-A", 1, channel="marketplace")),
        ],
    )
    assert recorder.channels == [{"web", "marketplace"}]  # once: the tables did not change
    assert recorder.decisions == [
        ("allocated", None, "web"),
        ("rejected", "insufficient_stock", "marketplace"),
    ]


def test_a_channel_the_table_does_not_know_is_counted_under_the_empty_channel_not_a_new_series() -> None:
    observer = PrometheusObserver(process=False)
    observer.on_channels(["web"])
    observer.on_decision("rejected", "unknown_channel", "typo-1")
    observer.on_decision("rejected", "unknown_channel", "typo-2")
    lines = _lines(observer)
    assert 'streamalloc_decisions_total{channel="",reason="unknown_channel",type="rejected"} 2.0' in lines
    assert not [line for line in lines if "typo" in line]


# --- decision latency -------------------------------------------------------------------------


def test_latency_runs_from_the_orders_event_time_to_the_decision_once_per_line() -> None:
    recorder = Recorder()
    harness = _allocator(recorder)
    harness.feed(INVENTORY, [(b"SKU-A", inventory("r1", "SKU-A", "WH-1", 5))])
    assert recorder.latencies == []  # inventory decides no order line
    harness.clock.advance(1500)
    harness.feed(REQUESTS, [(b"SKU-A", request("o1", "1", "SKU-A", 1, occurred_at=T0))])
    harness.feed(REQUESTS, [(b"SKU-A", request("o1", "1", "SKU-A", 1, occurred_at=T0))])  # a repeat
    harness.feed(REQUESTS, [(b"SKU-A", request("o2", "1", "SKU-A", 9, occurred_at=T0 + 1000))])  # rejected
    assert recorder.latencies == [1.5, 0.5]


def test_the_latency_histogram_counts_seconds_and_clamps_a_clock_ahead_to_zero() -> None:
    observer = PrometheusObserver(process=False)
    observer.on_decision_latency(0.2)
    observer.on_decision_latency(-3.0)  # the order's clock ran ahead of the worker's
    lines = _lines(observer)
    assert "streamalloc_decision_latency_seconds_count 2.0" in lines
    assert "streamalloc_decision_latency_seconds_sum 0.2" in lines
    assert 'streamalloc_decision_latency_seconds_bucket{le="0.005"} 1.0' in lines


# --- lines placed and filled at their first decision (the cycle service level) ---------------


def test_a_line_counts_as_placed_once_and_as_filled_first_only_when_allocated_in_full() -> None:
    recorder = Recorder()
    harness = _allocator(recorder, _tables(waitlist=True))
    harness.feed(INVENTORY, [(b"SKU-A", inventory("r1", "SKU-A", "WH-1", 5))])
    harness.feed(
        REQUESTS,
        [
            (b"SKU-A", request("o1", "1", "SKU-A", 3)),  # filled
            (b"SKU-A", request("o1", "1", "SKU-A", 3)),  # the same request again: not counted
            (b"SKU-A", request("o2", "1", "SKU-A", 3)),  # 2 left: web lets it wait
            (b"SKU-A", request("o3", "1", "SKU-A", 4, channel="marketplace")),  # rejected
            (b"SKU-A", request("o4", "1", "SKU-A", 1, channel="nowhere")),  # unknown channel
        ],
    )
    assert recorder.placed == [("web", True), ("web", False), ("marketplace", False), ("nowhere", False)]
    # a later decision of a placed line (a release) is no placement
    harness.feed(
        REQUESTS, [(b"SKU-A", request("o1", "1", "SKU-A", 3, command="release", cause_event_id="c1"))]
    )
    assert len(recorder.placed) == 4


def test_the_placed_and_filled_counters_start_at_zero_per_channel_and_bound_unknown_ones() -> None:
    observer = PrometheusObserver(process=False)
    assert 'streamalloc_lines_placed_total{channel=""} 0.0' in _lines(observer)
    observer.on_channels(["web"])
    lines = _lines(observer)
    assert 'streamalloc_lines_placed_total{channel="web"} 0.0' in lines
    assert 'streamalloc_lines_filled_first_total{channel="web"} 0.0' in lines
    observer.on_line_placed("web", True)
    observer.on_line_placed("web", False)
    observer.on_line_placed("nowhere", True)
    lines = _lines(observer)
    assert 'streamalloc_lines_placed_total{channel="web"} 2.0' in lines
    assert 'streamalloc_lines_filled_first_total{channel="web"} 1.0' in lines
    assert 'streamalloc_lines_filled_first_total{channel=""} 1.0' in lines
    assert not any("nowhere" in line for line in lines)


# --- stock totals -----------------------------------------------------------------------------


def _stock(harness: StageHarness, recorder: Recorder) -> StockSnapshot:
    """The stock after the next punctuation (it folds what commits noted)."""
    harness.advance(SETTINGS.punctuate_interval_ms)
    return recorder.stock[("allocator", 0)]


def test_stock_totals_follow_each_committed_change_per_location_and_bucket() -> None:
    recorder = Recorder()
    harness = _allocator(recorder, _tables(waitlist=True))
    harness.advance(0)  # the first punctuation counts the (empty) store
    assert recorder.stock[("allocator", 0)] == StockSnapshot(
        waiting_lines={"incoming": 0, "waitlisted": 0},
        ats={"marketplace": 0, "web": 0},
        out_of_stock_by_channel={"marketplace": 0, "web": 0},
        reservations={"marketplace": Reservations(), "web": Reservations()},
    )
    harness.feed(
        INVENTORY,
        [
            (b"SKU-A", inventory("r1", "SKU-A", "WH-1", 10)),
            (b"SKU-B", inventory("r2", "SKU-B", "WH-1", 2)),
            (b"SKU-B", inventory("r3", "SKU-B", "WH-2", 3)),
            (b"SKU-B", inventory("x1", "SKU-B", "WH-2", 4, type="expected", eta=T0 + 86_400_000)),
        ],
    )
    stock = _stock(harness, recorder)
    assert stock.units[("WH-1", "on_hand")] == 12 and stock.units[("WH-1", "available")] == 12
    assert stock.units[("WH-2", "incoming")] == 4
    assert stock.out_of_stock == {"WH-1": 0, "WH-2": 0}
    harness.feed(REQUESTS, [(b"SKU-B", request("o1", "1", "SKU-B", 3, location="WH-2"))])
    assert recorder.stock[("allocator", 0)] is stock  # noted at the commit, counted at the punctuation
    stock = _stock(harness, recorder)
    assert stock.units[("WH-2", "allocated")] == 3 and stock.units[("WH-2", "available")] == 0
    assert stock.units[("WH-1", "available")] == 12
    assert stock.out_of_stock == {"WH-1": 0, "WH-2": 1}
    # a line that waits: web lets lines wait for stock
    harness.feed(REQUESTS, [(b"SKU-A", request("o2", "1", "SKU-A", 50))])
    stock = _stock(harness, recorder)
    assert stock.waiting_lines == {"incoming": 0, "waitlisted": 1}
    assert stock.units[("WH-1", "on_hand")] == 12  # nothing moved for the waiting line
    # nothing changed since: no new report
    harness.advance(SETTINGS.punctuate_interval_ms)
    assert recorder.stock[("allocator", 0)] is stock


def test_a_reopened_partition_counts_its_stock_again_from_the_store() -> None:
    recorder = Recorder()
    harness = _allocator(recorder)
    harness.advance(0)
    harness.feed(INVENTORY, [(b"SKU-A", inventory("r1", "SKU-A", "WH-1", 7))])
    harness.feed(REQUESTS, [(b"SKU-A", request("o1", "1", "SKU-A", 2))])
    counted = _stock(harness, recorder)
    assert counted.units[("WH-1", "allocated")] == 2 and counted.units[("WH-1", "available")] == 5
    # A new owner (a fresh stage, the same store): its first punctuation counts the store.
    again = Recorder()
    harness.stage = AllocatorStage(SETTINGS, _tables, again, clock=harness.clock)
    assert _stock(harness, again) == counted


def test_the_exported_stock_sums_owned_partitions_and_forgets_a_closed_one() -> None:
    observer = PrometheusObserver(process=False)
    lines = _lines(observer)
    assert "streamalloc_backordered_units 0.0" in lines
    assert 'streamalloc_waiting_lines{reason="incoming"} 0.0' in lines
    one = StockSnapshot({("WH-1", "available"): 5}, {"WH-1": 1}, 2, {"incoming": 1, "waitlisted": 0})
    two = StockSnapshot({("WH-1", "available"): 3}, {"WH-1": 0}, 0, {"incoming": 0, "waitlisted": 2})
    observer.on_stock("allocator", 0, one)
    observer.on_stock("allocator", 1, two)
    lines = _lines(observer)
    assert 'streamalloc_stock_units{bucket="available",location="WH-1"} 8.0' in lines
    assert 'streamalloc_skus_out_of_stock{location="WH-1"} 1.0' in lines
    assert "streamalloc_backordered_units 2.0" in lines
    assert 'streamalloc_waiting_lines{reason="waitlisted"} 2.0' in lines
    observer.on_task_closed("allocator", 0)
    observer.on_task_closed("intake", 1)  # another stage's task: the stock stays
    lines = _lines(observer)
    assert 'streamalloc_stock_units{bucket="available",location="WH-1"} 3.0' in lines
    assert 'streamalloc_skus_out_of_stock{location="WH-1"} 0.0' in lines


# --- ATS and SKUs out of stock per channel ---------------------------------------------------


def _channel_tables() -> Tables:
    """web sells everywhere, marketplace only at WH-2."""
    return Tables(
        locations={lid: location_of({"location_id": lid, "priority": 1}) for lid in ("WH-1", "WH-2")},
        channels={
            "web": Channel(channel_id="web"),
            "marketplace": Channel(channel_id="marketplace", locations=frozenset({"WH-2"})),
        },
    )


def test_ats_and_skus_out_of_stock_per_channel_follow_the_availability_views() -> None:
    recorder = Recorder()
    harness = _allocator(recorder, _channel_tables())
    harness.advance(0)
    harness.feed(
        INVENTORY,
        [
            (b"SKU-A", inventory("r1", "SKU-A", "WH-1", 10)),
            (b"SKU-B", inventory("r2", "SKU-B", "WH-2", 3)),
        ],
    )
    # an order for a SKU never received: no SKU a channel is out of
    harness.feed(REQUESTS, [(b"SKU-Z", request("o0", "1", "SKU-Z", 1))])
    stock = _stock(harness, recorder)
    assert stock.skus == 2
    assert stock.ats == {"web": 13, "marketplace": 3}
    assert stock.out_of_stock_by_channel == {"web": 0, "marketplace": 1}  # SKU-A is at WH-1 only
    harness.feed(REQUESTS, [(b"SKU-B", request("o1", "1", "SKU-B", 3, channel="marketplace"))])
    stock = _stock(harness, recorder)
    assert stock.ats == {"web": 10, "marketplace": 0}
    assert stock.out_of_stock_by_channel == {"web": 1, "marketplace": 2}
    # the scan of a reopened partition counts the same
    again = Recorder()
    harness.stage = AllocatorStage(SETTINGS, _channel_tables, again, clock=harness.clock)
    assert _stock(harness, again) == stock


def test_a_new_channel_in_the_table_counts_the_partition_again() -> None:
    recorder = Recorder()
    tables = [_channel_tables()]
    clock = ManualClock(T0)
    harness = StageHarness(AllocatorStage(SETTINGS, lambda: tables[0], recorder, clock=clock), clock=clock)
    harness.advance(0)
    harness.feed(INVENTORY, [(b"SKU-A", inventory("r1", "SKU-A", "WH-1", 4))])
    assert _stock(harness, recorder).ats == {"web": 4, "marketplace": 0}
    tables[0] = Tables(
        locations=tables[0].locations,
        channels={**tables[0].channels, "store": Channel(channel_id="store")},
    )
    stock = _stock(harness, recorder)  # SKU-A did not change: counted again for the new channel
    assert stock.ats == {"web": 4, "marketplace": 0, "store": 4}
    assert stock.out_of_stock_by_channel == {"web": 0, "marketplace": 1, "store": 0}


def test_the_exported_channel_stock_starts_at_zero_for_known_channels_and_sums_partitions() -> None:
    observer = PrometheusObserver(process=False)
    observer.on_channels(["web", "store"])
    lines = _lines(observer)
    for channel in ("web", "store"):
        assert f'streamalloc_channel_ats_units{{channel="{channel}"}} 0.0' in lines
        assert f'streamalloc_skus_out_of_stock_by_channel{{channel="{channel}"}} 0.0' in lines
    assert "streamalloc_skus_stocked 0.0" in lines
    one = StockSnapshot(skus=3, ats={"web": 5, "store": 0}, out_of_stock_by_channel={"web": 1, "store": 3})
    two = StockSnapshot(skus=2, ats={"web": 1, "store": 2}, out_of_stock_by_channel={"web": 0, "store": 1})
    observer.on_stock("allocator", 0, one)
    observer.on_stock("allocator", 1, two)
    lines = _lines(observer)
    assert 'streamalloc_channel_ats_units{channel="web"} 6.0' in lines
    assert 'streamalloc_skus_out_of_stock_by_channel{channel="store"} 4.0' in lines
    assert "streamalloc_skus_stocked 5.0" in lines
    observer.on_task_closed("allocator", 1)
    lines = _lines(observer)
    assert 'streamalloc_channel_ats_units{channel="store"} 0.0' in lines
    assert "streamalloc_skus_stocked 3.0" in lines


# --- open reservations and their age ---------------------------------------------------------


def test_open_reservations_count_allocated_lines_until_picked_or_released_with_their_decided_at() -> None:
    recorder = Recorder()
    harness = _allocator(recorder, _channel_tables())
    harness.advance(0)
    harness.feed(INVENTORY, [(b"SKU-A", inventory("r1", "SKU-A", "WH-1", 10))])
    first = harness.clock.now_ms
    harness.feed(REQUESTS, [(b"SKU-A", request("o1", "1", "SKU-A", 2))])
    # the oldest to the second (the start of the one it was decided in), the sum exact
    assert _stock(harness, recorder).reservations["web"] == Reservations(1, first // 1000 * 1000, first)
    second = harness.clock.now_ms
    harness.feed(
        REQUESTS,
        [
            (b"SKU-A", request("o2", "1", "SKU-A", 1)),
            (b"SKU-A", request("o3", "1", "SKU-A", 1, channel="marketplace")),  # not sold at WH-1
            (b"SKU-A", request("o4", "1", "SKU-A", 50)),  # rejected: holds nothing
        ],
    )
    stock = _stock(harness, recorder)
    assert stock.reservations == {
        "web": Reservations(2, first // 1000 * 1000, first + second),
        "marketplace": Reservations(0, None, 0),
    }
    # picked and released lines are reservations no more; the oldest moves on
    harness.feed(
        REQUESTS,
        [(b"SKU-A", request("o1", "1", "SKU-A", 2, command="pick", location="WH-1", cause_event_id="p1"))],
    )
    assert _stock(harness, recorder).reservations["web"] == Reservations(1, second // 1000 * 1000, second)
    harness.feed(
        REQUESTS, [(b"SKU-A", request("o2", "1", "SKU-A", 1, command="release", cause_event_id="c2"))]
    )
    assert _stock(harness, recorder).reservations["web"] == Reservations(0, None, 0)
    # a reopened partition finds them in its store
    harness.feed(REQUESTS, [(b"SKU-A", request("o5", "1", "SKU-A", 3))])
    counted = _stock(harness, recorder)
    assert counted.reservations["web"].lines == 1
    again = Recorder()
    harness.stage = AllocatorStage(SETTINGS, _channel_tables, again, clock=harness.clock)
    assert _stock(harness, again) == counted


def test_a_store_from_before_the_reservation_index_gets_it_built_and_committed_by_a_punctuation() -> None:
    recorder = Recorder()
    harness = _allocator(recorder, _channel_tables())
    harness.advance(0)
    harness.feed(INVENTORY, [(b"SKU-A", inventory("r1", "SKU-A", "WH-1", 10))])
    decided = harness.clock.now_ms
    harness.feed(REQUESTS, [(b"SKU-A", request("o1", "1", "SKU-A", 2))])
    counted = _stock(harness, recorder)
    assert counted.reservations["web"] == Reservations(1, decided // 1000 * 1000, decided)
    # The store as an older version left it: the lines, neither the index nor the totals.
    store = harness.store("allocator")
    derived = [key for key, _ in store.iter_prefix(b"#r")]
    assert len(derived) == 2  # the count for the second it was decided in, the totals record
    store.apply_changelog([(key, None) for key in derived])
    again = Recorder()
    harness.stage = AllocatorStage(SETTINGS, _channel_tables, again, clock=harness.clock)
    assert _stock(harness, again) == counted
    assert sorted(key for key, _ in store.iter_prefix(b"#r")) == sorted(derived)  # committed


def test_the_exported_reservations_add_partitions_and_age_as_of_the_scrape() -> None:
    observer = PrometheusObserver(process=False)
    observer.stock.clock = lambda: 100.0  # seconds
    observer.on_channels(["web", "store"])
    lines = _lines(observer)
    for channel in ("web", "store"):
        assert f'streamalloc_open_reservations{{channel="{channel}"}} 0.0' in lines
        assert f'streamalloc_open_reservation_oldest_age_seconds{{channel="{channel}"}} 0.0' in lines
        assert f'streamalloc_open_reservation_summed_age_seconds{{channel="{channel}"}} 0.0' in lines
    # web: 40 s and 70 s old on one partition, 10 s old on another
    observer.on_stock("allocator", 0, StockSnapshot(reservations={"web": Reservations(2, 30_000, 90_000)}))
    observer.on_stock("allocator", 1, StockSnapshot(reservations={"web": Reservations(1, 90_000, 90_000)}))
    lines = _lines(observer)
    assert 'streamalloc_open_reservations{channel="web"} 3.0' in lines
    assert 'streamalloc_open_reservation_oldest_age_seconds{channel="web"} 70.0' in lines
    assert 'streamalloc_open_reservation_summed_age_seconds{channel="web"} 120.0' in lines
    observer.stock.clock = lambda: 101.0  # a second later, nothing changed: each is older
    assert 'streamalloc_open_reservation_summed_age_seconds{channel="web"} 123.0' in _lines(observer)
    observer.on_task_closed("allocator", 0)
    lines = _lines(observer)
    assert 'streamalloc_open_reservation_oldest_age_seconds{channel="web"} 11.0' in lines


# --- dead letters by reason -------------------------------------------------------------------


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def produce(self, *args: Any, **kwargs: Any) -> None:
        self.sent.append(args)


def test_a_dead_letter_is_counted_by_its_category_not_its_message() -> None:
    recorder = Recorder()
    letters = DeadLetters(_Producer(), DEAD_LETTER, lambda record, reason: b"letter", recorder)  # type: ignore[arg-type]
    record = Record(
        "p.orders", 0, 7, b"k", None, 0, b"\x00garbage", "unknown magic byte 0x00", None, "decode"
    )
    letters.send(record, "unknown magic byte 0x00", "decode")
    assert recorder.dead_letters == [("p.orders", "decode")]
    assert failure_category(ValidationError("lines must not be empty")) == "validation"
    assert failure_category(DeserializationError("truncated")) == "decode"


def test_refused_inventory_is_counted_as_refused_and_its_letter_says_why() -> None:
    recorder = Recorder()
    harness = _allocator(recorder)
    outputs = harness.feed(
        INVENTORY, [(b"SKU-A", inventory("a1", "SKU-A", "WH-1", -5, type="adjusted", reason="x"))]
    )
    assert recorder.dead_letters == [(INVENTORY, "refused")]
    [letter] = [decoded(DEAD_LETTER, o.value) for o in outputs if o.topic == DEAD_LETTER]
    assert "negative_on_hand" in letter["error"]


def test_every_dead_letter_reason_of_every_input_topic_starts_at_zero() -> None:
    observer = PrometheusObserver(process=False)
    observer.on_stages([AllocatorStage(SETTINGS, _tables)])
    lines = _lines(observer)
    for reason in ("decode", "validation", "too_large", "refused"):
        assert f'streamalloc_dead_letters_total{{reason="{reason}",topic="{INVENTORY}"}} 0.0' in lines
    observer.on_dead_letter(INVENTORY, "refused")
    assert f'streamalloc_dead_letters_total{{reason="refused",topic="{INVENTORY}"}} 1.0' in _lines(observer)


# --- the process ------------------------------------------------------------------------------


def test_the_worker_registry_exports_process_cpu_memory_and_gc() -> None:
    text = generate_latest(PrometheusObserver().registry).decode()
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_gc_collections_total"):
        assert f"\n{name}" in text, name
    assert "python_info{" in text
    assert (
        "process_cpu_seconds_total"
        not in generate_latest(PrometheusObserver(process=False).registry).decode()
    )


# --- units shipped (inventory turnover) -------------------------------------------------------


def test_units_shipped_are_counted_at_the_location_they_left_once_per_shipment() -> None:
    recorder = Recorder()
    harness = _allocator(recorder)
    harness.feed(INVENTORY, [(b"SKU-A", inventory("r1", "SKU-A", "WH-1", 5))])
    shipment = {"cause_event_id": "ship-1", "location": "WH-1"}
    harness.feed(
        REQUESTS,
        [
            (b"SKU-A", request("o1", "1", "SKU-A", 3)),
            (
                b"SKU-A",
                request("o1", "1", "SKU-A", 3, command="pick", cause_event_id="pick-1", location="WH-1"),
            ),
            (b"SKU-A", request("o1", "1", "SKU-A", 2, command="fulfil", **shipment)),
            (b"SKU-A", request("o1", "1", "SKU-A", 2, command="fulfil", **shipment)),  # a repeat: no shipment
        ],
    )
    assert recorder.shipped == [("WH-1", 2)]


def test_units_shipped_start_at_zero_for_every_known_location() -> None:
    observer = PrometheusObserver()
    observer.on_location_staleness(0, ["WH-1", "WH-2"], [])
    observer.on_shipped("WH-1", 4)
    lines = _lines(observer)
    assert 'streamalloc_units_shipped_total{location="WH-1"} 4.0' in lines
    assert 'streamalloc_units_shipped_total{location="WH-2"} 0.0' in lines
