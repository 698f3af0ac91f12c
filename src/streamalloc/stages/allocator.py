"""Allocator: the SKU state machine. allocation-requests + inventory -> allocations, availability.

Single writer per SKU: both inputs are keyed by SKU and co-partitioned, so every command
for a SKU lands, in order, on one partition that one worker owns. Availability goes out
at most once per SKU per commit, from `before_commit`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from streamalloc.config import Settings
from streamalloc.domain import (
    Adjust,
    AllocateLine,
    AllocationEvent,
    Command,
    Count,
    Expect,
    FulfilLine,
    Inspect,
    InventoryRejected,
    PickLine,
    Receive,
    ReleaseLine,
    ReturnLine,
    SkuState,
    apply,
)
from streamalloc.domain.views import availability
from streamalloc.errors import ValidationError
from streamalloc.runtime.observer import Observer
from streamalloc.runtime.stage import BaseStage, PartitionContext, Record
from streamalloc.runtime.state import PartitionTransaction
from streamalloc.serialization import topic_serde
from streamalloc.stages.state_codec import load_state, write_changes
from streamalloc.stages.tables import TablesProvider

STORE = "allocator"


class AllocatorStage(BaseStage):
    name = "allocator"
    stores: Sequence[str] = (STORE,)

    def __init__(self, settings: Settings, tables: TablesProvider, observer: Observer | None = None) -> None:
        self._requests_topic = settings.topic("allocation-requests")
        self._inventory_topic = settings.topic("inventory")
        self._allocations_topic = settings.topic("allocations")
        self._availability_topic = settings.topic("availability")
        self._dead_letter_topic = settings.topic("dead-letter")
        self._requests = topic_serde(settings, self._requests_topic)
        self._inventory = topic_serde(settings, self._inventory_topic)
        self._allocations = topic_serde(settings, self._allocations_topic)
        self._availability = topic_serde(settings, self._availability_topic)
        self._dead_letters = topic_serde(settings, self._dead_letter_topic)
        self._tables = tables
        self._observer = observer or Observer()
        # partition -> (the transaction they belong to, SKU -> (cause event id, its latest
        # state) for the SKUs changed in it): availability needs no second read at commit
        self._dirty: dict[int, tuple[PartitionTransaction, dict[str, tuple[str, SkuState]]]] = {}

    def topics(self) -> Sequence[str]:
        return [self._requests_topic, self._inventory_topic]

    def decode(self, topic: str, key: bytes | None, value: bytes | None) -> Command:
        if value is None:
            raise ValidationError("a command needs a value")
        if topic == self._requests_topic:
            return request_command(self._requests.decode(value, topic=topic))
        return inventory_command(self._inventory.decode(value, topic=topic))

    def process(self, ctx: PartitionContext, records: list[Record]) -> None:
        txn = ctx.stores[STORE]
        dirty = self._dirty_skus(ctx.partition, txn)
        tables = self._tables()
        now = int(time.time() * 1000)
        by_sku: dict[str, list[Record]] = {}
        for record in records:
            by_sku.setdefault(record.value.sku, []).append(record)
        emit, encode, topic = ctx.emit, self._allocations.encode, self._allocations_topic
        on_decision = self._observer.on_decision
        for sku, sku_records in by_sku.items():
            state = load_state(sku, txn)
            cause = dirty[sku][0] if sku in dirty else None
            for record in sku_records:
                decision = apply(state, record.value, tables, now)
                for event in decision.events:
                    if type(event) is AllocationEvent:
                        emit(topic, event.order_id.encode(), encode(event.as_record()))
                        on_decision(event.type, event.reason)
                    elif type(event) is InventoryRejected:
                        self._reject_inventory(ctx, record, event)
                if decision.events:
                    cause = record.value.event_id
            if cause is not None:
                dirty[sku] = (cause, state)  # the newest state object: it holds every change
            if state.has_changes:
                write_changes(sku, state.take_changes(), txn)

    def before_commit(self, ctx: PartitionContext) -> None:
        entry = self._dirty.pop(ctx.partition, None)
        txn = ctx.stores.get(STORE)
        if entry is None or txn is None or entry[0] is not txn:
            return
        tables = self._tables()
        now = int(time.time() * 1000)
        for sku, (cause, state) in entry[1].items():
            view = availability(state, tables, now)
            record = availability_record(view, cause)
            ctx.emit(self._availability_topic, sku.encode(), self._availability.encode(record))

    def _dirty_skus(self, partition: int, txn: PartitionTransaction) -> dict[str, tuple[str, SkuState]]:
        # Keyed by the transaction object: an aborted batch's set is dropped with its txn.
        entry = self._dirty.get(partition)
        if entry is None or entry[0] is not txn:
            entry = self._dirty[partition] = (txn, {})
        return entry[1]

    def _reject_inventory(self, ctx: PartitionContext, record: Record, event: InventoryRejected) -> None:
        letter = {
            "event_id": event.event_id,
            "source_topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "key": record.key,
            "value": record.raw,
            "error": f"inventory event refused: {event.reason}",
            "failed_at": event.decided_at,
        }
        ctx.emit(self._dead_letter_topic, record.key, self._dead_letters.encode(letter))
        self._observer.on_dead_letter(record.topic, event.reason)


def request_command(r: dict[str, Any]) -> Command:
    """An allocation-requests record as a domain command."""
    kind = r["command"]
    # The domain's cause is the event that caused the request (the order event, or the
    # decision the order stage reacted to), so allocations trace back to it directly.
    cause = r["cause_event_id"] or r["event_id"]
    if kind == "allocate":  # the hot path: built directly, no keyword dict
        return AllocateLine(
            event_id=cause,
            occurred_at=r["occurred_at"],
            order_id=r["order_id"],
            line_id=r["line_id"],
            sku=r["sku"],
            channel=r["channel"],
            qty=r["qty"],
            location=r["location"],
            lot=r["lot"],
            priority=r["priority"],
            region=r["region"],
            ship_complete=r["ship_complete"],
            reservation_ttl_s=r["reservation_ttl_s"],
        )
    common = {
        "event_id": cause,
        "occurred_at": r["occurred_at"],
        "order_id": r["order_id"],
        "line_id": r["line_id"],
        "sku": r["sku"],
        "channel": r["channel"],
    }
    if kind == "release":
        return ReleaseLine(**common, reason=r["reason"] or "cancelled")
    if kind == "pick":
        return PickLine(**common, qty=r["qty"], location=r["location"], lot=r["lot"])
    if kind == "fulfil":
        return FulfilLine(**common, qty=r["qty"], location=r["location"])
    if kind == "return":
        return ReturnLine(**common, qty=r["qty"], location=r["location"], lot=r["lot"])
    raise ValidationError(f"command must be allocate, release, pick, fulfil or return, not {kind!r}")


def inventory_command(r: dict[str, Any]) -> Command:
    """An inventory record as a domain command."""
    kind = r["type"]
    lot = r["lot"]["lot_id"] if r["lot"] else None
    common = {
        "event_id": r["event_id"],
        "occurred_at": r["occurred_at"],
        "sku": r["sku"],
        "location": r["location"],
    }
    if kind == "received":
        return Receive(**common, qty=r["qty"], lot=lot, reason=r["reason"])
    if kind == "adjusted":
        return Adjust(**common, qty=r["qty"], reason=r["reason"], lot=lot)
    if kind == "counted":
        return Count(**common, qty=r["qty"], reason=r["reason"], lot=lot)
    if kind == "expected":
        return Expect(**common, qty=r["qty"], eta=r["eta"], lot=lot)
    result = r["result"]
    if result not in ("pass", "fail"):
        raise ValidationError(f"an inspected event needs result pass or fail, not {result!r}")
    return Inspect(**common, qty=r["qty"], result=result, lot=lot)


def availability_record(view: Any, cause_event_id: str) -> dict[str, Any]:
    return {
        "event_id": f"{cause_event_id}:availability:{view.sku}",
        "cause_event_id": cause_event_id,
        "sku": view.sku,
        "as_of": view.as_of,
        "totals": {
            "on_hand": view.on_hand,
            "allocated": view.allocated,
            "picked": view.picked,
            "quality_control": view.quality_control,
            "damaged": view.damaged,
            "safety_stock": view.safety_stock,
            "available": view.available,
        },
        "locations": [
            {
                "location": row.location_id,
                "on_hand": row.on_hand,
                "allocated": row.allocated,
                "picked": row.picked,
                "quality_control": row.quality_control,
                "damaged": row.damaged,
                "safety_stock": row.safety_stock,
                "available": row.available,
                "status": row.status,
            }
            for row in view.locations
        ],
        "channels": [{"channel": channel, "ats": ats} for channel, ats in sorted(view.ats.items())],
    }
