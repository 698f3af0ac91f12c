"""The order stage end to end in process: allocation records in, releases and order status out.

`feed` runs one batch as the worker does (decode, process, `before_commit`, commit), so the
order status the stage publishes is checked too.
"""

from __future__ import annotations

import marshal
from typing import Any

import pytest

from streamalloc.config import Settings
from streamalloc.domain import OrderLine, OrderState
from streamalloc.domain.orders import Units
from streamalloc.errors import StreamallocError
from streamalloc.runtime.stage import PartitionContext, Record
from streamalloc.runtime.state import InMemoryStore
from streamalloc.serialization import topic_serde
from streamalloc.stages.order_stage import STORE, OrderStage, decode_order, encode_order
from streamalloc.stages.records import OrderStatusLine, OrderStatusRecord

SETTINGS = Settings()
ALLOCATIONS = SETTINGS.topic("allocations")
REQUESTS = SETTINGS.topic("allocation-requests")
ORDER_STATUS = SETTINGS.topic("order-status")
T0 = 1_764_000_000_000


def allocation(event_id: str, type_: str, line_id: str | None = None, **fields: Any) -> bytes:
    """An allocations record of order o1, as the allocator (or intake) writes it (Avro)."""
    serde = topic_serde(SETTINGS, ALLOCATIONS)
    return serde.encode(allocation_record(event_id, type_, line_id, **fields))


def allocation_record(event_id: str, type_: str, line_id: str | None = None, **fields: Any) -> dict[str, Any]:
    record = {
        "event_id": event_id,
        "cause_event_id": "placed",
        "type": type_,
        "order_id": "o1",
        "line_id": line_id,
        "sku": None if line_id is None else "SKU-A",
        "channel": "web",
        "qty": 1,
        "occurred_at": T0,
        "decided_at": T0,
        **fields,
    }
    return topic_serde(SETTINGS, ALLOCATIONS).validate(record)


class Driver:
    """One order stage and its store; each `feed` is one committed batch on partition 0."""

    def __init__(self, settings: Settings = SETTINGS) -> None:
        self.stage = OrderStage(settings)
        self.store = InMemoryStore(STORE)
        self._offset = 0

    def feed(self, *values: bytes) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []

        def emit(
            topic: str, key: bytes, value: bytes, partition: int | None = None, headers: Any = None
        ) -> None:
            out.append((topic, topic_serde(SETTINGS, topic).decode(value)))

        txn = self.store.partition(0).begin()
        records = []
        for value in values:
            records.append(
                Record(ALLOCATIONS, 0, self._offset, b"o1", self.stage.decode(ALLOCATIONS, b"o1", value), 0)
            )
            self._offset += 1
        ctx = PartitionContext(0, {STORE: txn}, emit)
        self.stage.process(ctx, records)
        self.stage.before_commit(ctx)
        txn.prepare()
        txn.flush(None)
        return out


def of(outputs: list[tuple[str, dict[str, Any]]], topic: str) -> list[dict[str, Any]]:
    return [record for t, record in outputs if t == topic]


def test_a_reallocated_line_holds_at_its_new_location_and_a_cancel_then_releases_it() -> None:
    driver = Driver()
    driver.feed(
        allocation("acc", "accepted", line_count=1, qty=2),
        allocation("a", "allocated", "1", qty=2, location="WH-A"),
    )
    moved = driver.feed(
        allocation(
            "r", "released", "1", qty=2, location="WH-A", reason="reallocated", cause_event_id="sweep"
        ),
        allocation(
            "m", "reallocated", "1", qty=2, location="WH-B", reason="location_offline", cause_event_id="sweep"
        ),
    )
    [status] = of(moved, ORDER_STATUS)
    assert (status["status"], status["lines"][0]["status"], status["lines"][0]["allocated"]) == (
        "allocated",
        "allocated",
        2,
    )

    cancelled = driver.feed(
        allocation("c", "cancel_requested", cause_event_id="cancel-event", reason="cancelled")
    )
    [request] = of(cancelled, REQUESTS)
    assert (request["command"], request["line_id"], request["sku"], request["reason"]) == (
        "release",
        "1",
        "SKU-A",
        "cancelled",
    )
    assert (request["event_id"], request["cause_event_id"]) == ("c:1:release", "c")
    assert of(cancelled, ORDER_STATUS) == []  # not before the release is done

    done = driver.feed(
        allocation("x", "released", "1", qty=2, location="WH-B", reason="cancelled", cause_event_id="c")
    )
    [status] = of(done, ORDER_STATUS)
    assert (status["status"], status["lines"][0]["status"], status["lines"][0]["allocated"]) == (
        "cancelled",
        "released",
        0,
    )


def test_a_record_of_the_previous_version_still_decodes_and_carries_on() -> None:
    driver = Driver()
    v1 = (1, "web", 2, True, False, False, T0, {"1": ("SKU-A", 2, 2, "allocated", None)})
    txn = driver.store.partition(0).begin()  # as a restore from the changelog leaves it
    txn.set(b"o1", marshal.dumps(v1))
    txn.prepare()
    txn.flush(None)

    outputs = driver.feed(allocation("rej", "rejected", "2", location=None, reason="insufficient_stock"))
    [request] = of(outputs, REQUESTS)  # ship-complete: line 1 is released
    assert (request["line_id"], request["reason"], request["qty"]) == ("1", "ship_complete_failed", 2)
    order = decode_order(driver.store.partition(0).begin().get(b"o1") or b"")
    assert (order.line_count, order.ship_complete, order.ship_failed) == (2, True, True)
    assert decode_order(encode_order(order)) == order


def test_a_version_3_record_with_its_history_as_contract_dicts_still_decodes() -> None:
    driver = Driver()
    driver.feed(
        allocation("acc", "accepted", line_count=1), allocation("a", "allocated", "1", location="WH-A")
    )
    order = decode_order(driver.store.partition(0).begin().get(b"o1") or b"")
    assert order.history is not None and len(order.history) == 2
    lines = {
        line_id: (
            line.sku,
            line.qty,
            line.status,
            line.reason,
            line.returned,
            tuple(k + u for k, u in line.units.items()),
        )
        for line_id, line in order.lines.items()
    }
    v3 = (
        3,
        order.channel,
        order.line_count,
        order.ship_complete,
        order.placements,
        order.cancelled,
        order.ship_failed,
        order.decided_at,
        lines,
        order.applied,
        tuple((event.as_record(), source) for event, source in order.history),
    )  # fmt: skip  (as the previous release wrote it)

    assert decode_order(marshal.dumps(v3)) == order


def test_on_real_kafka_the_stage_reads_no_batches_and_keeps_no_history() -> None:
    """A read_committed reader of Kafka never sees a batch that did not commit: nothing to
    take back, so the order record goes without its history (and carries the ids applied)."""
    kafka, embedded = Driver(Settings(broker_profile="kafka")), Driver(Settings(broker_profile="embedded"))
    for driver in (kafka, embedded):
        driver.feed(
            allocation("acc", "accepted", line_count=1), allocation("a", "allocated", "1", location="WH-A")
        )
        repeat = driver.feed(allocation("a", "allocated", "1", location="WH-A"))
        assert [s["lines"][0]["allocated"] for s in of(repeat, ORDER_STATUS)] == [
            1
        ]  # a repeat changes nothing
    on_kafka = decode_order(kafka.store.partition(0).begin().get(b"o1") or b"")
    on_embedded = decode_order(embedded.store.partition(0).begin().get(b"o1") or b"")

    assert (kafka.stage.reads_batches, embedded.stage.reads_batches) == (False, True)
    assert on_kafka.history is None and on_kafka.applied == {"acc", "a"}
    assert on_embedded.history is not None and [e.event_id for e, _ in on_embedded.history] == ["acc", "a"]
    assert on_kafka.lines == on_embedded.lines


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (allocation("z", "teleported", "1"), "unknown allocation event type 'teleported'"),
        (allocation("z", "allocated", None, sku="SKU-A"), "needs a line_id and a sku"),
        # Avro is not checked field by field on the way in (JSON is): the stage refuses it
        (
            topic_serde(SETTINGS, ALLOCATIONS).encode(
                {**allocation_record("z", "allocated", "1"), "sku": ""}
            ),
            "needs a line_id and a sku",
        ),
    ],
)
def test_an_allocation_record_the_order_stage_cannot_follow_is_refused(record: bytes, message: str) -> None:
    with pytest.raises(StreamallocError, match=message):
        OrderStage(SETTINGS).decode(ALLOCATIONS, b"o1", record)


def test_a_status_record_built_in_one_step_equals_its_constructors_and_fits_the_schema() -> None:
    order = OrderState(
        "web",
        2,
        decided_at=T0,
        lines={
            "2": OrderLine("SKU-B", 1, "rejected", "insufficient_stock"),
            "1": OrderLine("SKU-A", 2, "picked", None, {("WH-A", None): Units(0, 2, 0)}),
        },
    )
    record = OrderStatusRecord.of("o1", order, "partially_allocated", "cause")
    assert record == OrderStatusRecord(
        "cause:status",
        "o1",
        "partially_allocated",
        (
            OrderStatusLine("1", "SKU-A", 2, 2, "picked"),
            OrderStatusLine("2", "SKU-B", 1, 0, "rejected", "insufficient_stock"),
        ),
        T0,
    )
    serde = topic_serde(SETTINGS, ORDER_STATUS)
    assert serde.validate(record.as_record()) == record.as_record()


def test_an_order_edit_changes_a_quantity_releases_a_line_left_out_and_adds_one() -> None:
    driver = Driver()
    driver.feed(
        allocation("acc", "accepted", line_count=2, qty=5),
        allocation("a1", "allocated", "1", qty=3, location="WH-A"),
        allocation("a2", "allocated", "2", qty=2, location="WH-A", sku="SKU-B"),
    )
    # intake's amend_requested, one per line the edit lists (a batch may end between them)
    edit = {"cause_event_id": "edit", "line_count": 2}
    first = driver.feed(allocation("edit:1:amend_requested", "amend_requested", "1", qty=1, **edit))
    assert of(first, REQUESTS) == []  # not seen whole yet: the store keeps what it has seen
    order = decode_order(driver.store.partition(0).begin().get(b"o1") or b"")
    assert order.amending == ("edit", ("1",)) and decode_order(encode_order(order)) == order
    second = driver.feed(
        allocation("edit:3:amend_requested", "amend_requested", "3", qty=4, sku="SKU-C", **edit)
    )
    [request] = of(second, REQUESTS)
    assert (request["command"], request["line_id"], request["sku"], request["reason"]) == (
        "release",
        "2",
        "SKU-B",
        "amended",
    )
    assert of(second, ORDER_STATUS) == []  # line 2 is still leaving, line 3 is undecided

    done = driver.feed(
        allocation("e1", "amended", "1", qty=1, cause_event_id="edit"),
        allocation("e2", "released", "1", qty=2, location="WH-A", reason="amended", cause_event_id="edit"),
        allocation(
            "e3",
            "released",
            "2",
            qty=2,
            location="WH-A",
            reason="amended",
            sku="SKU-B",
            cause_event_id="edit",
        ),
        allocation("e4", "allocated", "3", qty=4, location="WH-A", sku="SKU-C", cause_event_id="edit"),
    )
    [status] = of(done, ORDER_STATUS)
    assert status["status"] == "allocated"
    assert [
        (line["line_id"], line["qty"], line["allocated"], line["status"]) for line in status["lines"]
    ] == [
        ("1", 1, 1, "allocated"),
        ("2", 2, 0, "released"),  # reported as it left, not counted in the order's status
        ("3", 4, 4, "allocated"),
    ]


def test_an_order_record_gives_back_the_ids_applied_of_every_kind_of_event_it_kept() -> None:
    """The ids applied come from the kept history's entries without expanding them, each
    kind's id read where its entry has it: a repeat of any of them stays a no-op."""
    driver = Driver()
    driver.feed(
        allocation("acc", "accepted", line_count=1, qty=2),
        allocation("a", "allocated", "1", qty=2, location="WH-A"),
    )
    driver.feed(
        allocation(
            "edit:1:amend_requested", "amend_requested", "1", qty=1, cause_event_id="edit", line_count=1
        )
    )
    driver.feed(allocation("c", "cancel_requested", cause_event_id="cancel-event", reason="cancelled"))
    order = decode_order(driver.store.partition(0).begin().get(b"o1") or b"")
    ids = {"acc", "a", "edit:1:amend_requested", "c"}
    assert order.applied >= ids and {e.event_id for e, _ in order.history or ()} == order.applied
    again = driver.feed(
        allocation("acc", "accepted", line_count=1, qty=2),
        allocation("c", "cancel_requested", cause_event_id="cancel-event", reason="cancelled"),
    )
    assert of(again, REQUESTS) == [], "repeats of applied events ask for nothing"
