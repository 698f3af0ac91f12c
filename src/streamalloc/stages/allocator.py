"""Allocator: the SKU state machine. allocation-requests + inventory -> allocations, availability.

Single writer per SKU: both inputs are keyed by SKU and co-partitioned, so every command
for a SKU lands, in order, on one partition that one worker owns. Every command, from an
input record or from punctuation, goes through `_apply`, which emits every kind of event
its decision holds: allocations, stock changes (`stock-changes`) and refused inventory
(`dead-letter`). Availability goes out at most once per SKU per commit, from `before_commit`.

Punctuation (wall clock, every `punctuate_interval_ms`) does what no input triggers:

- reservation expiry: timers sit in the store in due order (state_codec), so they
  survive restarts and rebalances with the changelog; a due one is deleted and its line
  expired (`ExpireLine`) in the same transaction;
- locations: when a location becomes unusable (offline in the table, or stale: its
  inventory feed silent longer than its `freshness_limit_s`) or usable again, every SKU
  of the partition with a balance there is swept (`Sweep`): soft allocations move off,
  waiting lines are served. The first punctuation after an assignment sweeps the SKUs at
  every unusable location, so a change missed while no one owned the partition is acted
  on. Staleness is judged from the feed this partition sees (its SKUs' inventory events).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, assert_never

from streamalloc.config import Settings
from streamalloc.domain import (
    Adjust,
    AllocateLine,
    AllocationEvent,
    AmendLine,
    Command,
    ConfirmLine,
    Count,
    Expect,
    ExpireLine,
    ExtendHold,
    FulfilLine,
    HoldLine,
    Inspect,
    InventoryRejected,
    PickLine,
    Receive,
    ReceiveTransfer,
    ReleaseLine,
    ReturnLine,
    ShipTransfer,
    SkuState,
    StockChanged,
    Sweep,
    Tables,
    apply,
    contend,
)
from streamalloc.domain.events import FULFILLED
from streamalloc.domain.views import Availability, availability
from streamalloc.errors import ValidationError
from streamalloc.runtime.dead_letter import REFUSED
from streamalloc.runtime.observer import Observer
from streamalloc.runtime.stage import BaseStage, PartitionContext, Record
from streamalloc.runtime.state import KeptByPartition, PartitionStatus, PartitionTransaction, StorePartition
from streamalloc.serialization import topic_serde
from streamalloc.stages.state_codec import (
    KeptSku,
    book_key,
    due_timers,
    feed_key,
    kept_state,
    load_state,
    note_swept,
    open_reservations,
    skus_at,
    stocked_skus,
    swept_locations,
    to_keep,
    write_changes,
)
from streamalloc.stages.stock_totals import StockTotals, contribution, waiting
from streamalloc.stages.tables import TablesProvider

STORE = "allocator"
_TIMERS_PER_PUNCTUATION = 2000  # the rest wait for the next one: a backlog cannot stall a commit
#: SKUs whose balances and book are kept between transactions, per partition (runtime.state.kept):
#: about 1 KB each.
CACHED_SKUS = 2000
_log = logging.getLogger(__name__)


def wall_clock_ms() -> int:
    """The wall clock in epoch ms: the stage's clock unless a test gives it a fake one."""
    return time.time_ns() // 1_000_000


class AllocatorStage(BaseStage):
    name = "allocator"
    stores: Sequence[str] = (STORE,)

    def __init__(
        self,
        settings: Settings,
        tables: TablesProvider,
        observer: Observer | None = None,
        *,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self._requests_topic = settings.topic("allocation-requests")
        self._inventory_topic = settings.topic("inventory")
        self._allocations_topic = settings.topic("allocations")
        self._availability_topic = settings.topic("availability")
        self._stock_changes_topic = settings.topic("stock-changes")
        self._dead_letter_topic = settings.topic("dead-letter")
        self._requests = topic_serde(settings, self._requests_topic)
        self._inventory = topic_serde(settings, self._inventory_topic)
        self._allocations = topic_serde(settings, self._allocations_topic)
        self._stock_changes = topic_serde(settings, self._stock_changes_topic)
        self._availability = topic_serde(settings, self._availability_topic)
        self._dead_letters = topic_serde(settings, self._dead_letter_topic)
        self._tables = tables
        self._observer = observer or Observer()
        self._clock = clock  # epoch ms: decision times, reservation deadlines, availability's as_of
        # partition -> (the transaction they belong to, SKU -> (cause event id, its latest
        # state) for the SKUs changed in it): availability needs no second read at commit
        self._dirty: dict[int, tuple[PartitionTransaction, dict[str, tuple[str, SkuState]]]] = {}
        self.punctuate_interval_ms = settings.punctuate_interval_ms
        # partition -> (base tables, stale set) -> the tables decisions use there
        self._tables_of: dict[int, tuple[Tables, frozenset[str], Tables]] = {}
        self._channels_of: Tables | None = None  # the tables whose channels the observer knows
        self._stock: dict[int, StockTotals] = {}  # partition -> its stock, for the metrics
        self._kept: KeptByPartition[KeptSku] = KeptByPartition(CACHED_SKUS)

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
        now = self._clock()
        tables = self._partition_tables(ctx.partition, txn, now)
        by_sku: dict[str, list[Record]] = {}
        feed: dict[str, int] = {}
        inventory_topic = self._inventory_topic
        for record in records:
            by_sku.setdefault(record.value.sku, []).append(record)
            if record.topic == inventory_topic:
                at = record.value.occurred_at
                if at > feed.get(record.value.location, -1):
                    feed[record.value.location] = at
        if feed:
            _note_feed(txn, feed)
        decide = self._apply
        kept = self._kept.serving(ctx.partition, txn)
        for sku, sku_records in by_sku.items():
            if tables.contending:  # a channel lets its lines yield to higher-ranked rivals
                sku_records = contend(sku_records, _command_of, tables)  # noqa: PLW2901
            seen = dirty.get(sku)  # an earlier batch of this transaction's: its state as it is
            state, cause = (
                (kept_state(sku, txn, kept.take(sku)), None) if seen is None else (seen[1], seen[0])
            )
            for record in sku_records:
                if decide(ctx, state, record.value, tables, now, record):
                    cause = record.value.event_id
            if cause is not None:
                dirty[sku] = (cause, state)  # the newest state object: it holds every change
            if state.has_changes:
                write_changes(sku, state.take_changes(), txn)
            kept.put(sku, to_keep(state))

    def punctuate(self, ctx: PartitionContext, now_ms: int) -> bool:
        txn = ctx.stores[STORE]
        tables = self._partition_tables(ctx.partition, txn, now_ms)
        built = self._count_stock(ctx.partition, txn, tables, now_ms)
        acted = self._expire_due(ctx, txn, tables, now_ms) or built
        unusable = frozenset(loc for loc in tables.locations if loc not in tables.online)
        self._observer.on_location_staleness(ctx.partition, tables.locations.keys(), tables.stale)
        # What the partition's state was last swept for is part of that state (restored with
        # it): a sweep lost in a crash is redone, and a new owner acts on a change it missed.
        last = swept_locations(txn)
        changed = unusable ^ last
        if not changed:
            return acted
        note_swept(txn, unusable)
        for location in sorted(changed):
            status = tables.status(location)
            cause = f"locations:{location}:{status}@{now_ms}"
            skus = skus_at(location, txn)
            _log.info(
                "location status changed",
                extra={"location": location, "status": status, "skus": len(skus), "partition": ctx.partition},
            )
            self._observer.on_location_status(location, status)
            for sku in skus:
                # Availability goes out for every SKU there even when nothing moved: it is
                # the event that tells channel-sync the location's new status.
                self._decide(
                    ctx, txn, sku, Sweep(event_id=cause, occurred_at=now_ms, sku=sku), tables, now_ms,
                    always_publish=True,
                )  # fmt: skip
        return True

    def _expire_due(self, ctx: PartitionContext, txn: PartitionTransaction, tables: Tables, now: int) -> bool:
        acted = False
        for key, due, sku, order_id, line_id in due_timers(txn, now, _TIMERS_PER_PUNCTUATION):
            txn.delete(key)
            acted = True
            self._decide(ctx, txn, sku, ExpireLine.due(sku, order_id, line_id, due), tables, now)
        return acted

    def _decide(
        self,
        ctx: PartitionContext,
        txn: PartitionTransaction,
        sku: str,
        command: Command,
        tables: Tables,
        now: int,
        *,
        always_publish: bool = False,
    ) -> bool:
        """Apply one engine command (punctuation) to a SKU; True when it changed anything."""
        dirty = self._dirty_skus(ctx.partition, txn)
        kept = self._kept.serving(ctx.partition, txn)
        entry = dirty.get(sku)
        state = entry[1] if entry is not None else kept_state(sku, txn, kept.take(sku))
        decided = self._apply(ctx, state, command, tables, now, None)
        if decided or always_publish:
            dirty[sku] = (command.event_id, state)
        if state.has_changes:
            write_changes(sku, state.take_changes(), txn)
        kept.put(sku, to_keep(state))
        return decided or always_publish

    def _apply(
        self,
        ctx: PartitionContext,
        state: SkuState,
        command: Command,
        tables: Tables,
        now: int,
        source: Record | None,
    ) -> bool:
        """Decide `command` against `state` and emit every event of the decision; False when
        it was a duplicate. Input records (`source`) and punctuation (None) both come here, so
        no kind of event goes out from one of them only."""
        decision = apply(state, command, tables, now)
        if not decision:
            return False
        placed = command if type(command) is AllocateLine else None
        if placed is not None:  # a line's first decision: from its order's time
            self._observer.on_decision_latency((now - placed.occurred_at) / 1000)
        filled = 0  # units the placed line got at this, its first decision
        emit = ctx.emit
        for event in decision:
            match event:
                case AllocationEvent():
                    emit(
                        self._allocations_topic,
                        event.order_id.encode(),
                        self._allocations.encode(event.as_record()),
                    )
                    self._observer.on_decision(event.type, event.reason, event.channel)
                    if event.type == FULFILLED and event.location is not None:
                        self._observer.on_shipped(event.location, event.qty)
                    if (
                        placed is not None
                        and event.type == "allocated"
                        and event.line_id == placed.line_id
                        and event.order_id == placed.order_id
                    ):  # the placed line's own (a decision may serve waiting lines too)
                        filled += event.qty
                case StockChanged():  # the inventory ledger: every change, its cause
                    emit(
                        self._stock_changes_topic,
                        event.sku.encode(),
                        self._stock_changes.encode(event.as_record()),
                    )
                case InventoryRejected():
                    self._reject_inventory(ctx, source, event)
                case _:
                    assert_never(event)
        if placed is not None:
            self._observer.on_line_placed(placed.channel, filled >= placed.qty)
        return True

    def _partition_tables(self, partition: int, txn: PartitionTransaction, now: int) -> Tables:
        """The tables as this partition sees them: stale locations marked from its feed clock."""
        base = self._tables()
        if base is not self._channels_of:
            self._channels_of = base
            self._observer.on_channels(base.channels.keys())
        limits = [loc for loc in base.locations.values() if loc.freshness_limit_s is not None and loc.online]
        if not limits:
            return base
        stale = []
        for loc in limits:
            seen = txn.get(feed_key(loc.location_id))
            if seen is not None and now - int(seen) > (loc.freshness_limit_s or 0) * 1000:
                stale.append(loc.location_id)
        cached = self._tables_of.get(partition)
        key = frozenset(stale)
        if cached is not None and cached[0] is base and cached[1] == key:
            return cached[2]
        tables = Tables(base.locations, base.channels, key, base.lot_policy) if key else base
        self._tables_of[partition] = (base, key, tables)
        return tables

    def before_commit(self, ctx: PartitionContext) -> None:
        entry = self._dirty.pop(ctx.partition, None)
        txn = ctx.stores.get(STORE)
        if txn is None:
            return
        stock = self._stock.get(ctx.partition)
        if stock is not None and stock.store is not txn.partition:
            stock = None  # counted for a store since closed: the next punctuation counts anew
        if entry is None or entry[0] is not txn:
            return
        now = self._clock()
        tables = self._partition_tables(ctx.partition, txn, now)
        for sku, (cause, state) in entry[1].items():
            view = availability(state, tables, now)
            record = availability_record(view, cause)
            ctx.emit(self._availability_topic, sku.encode(), self._availability.encode(record))
            if stock is not None:
                stock.note(sku, view, state)

    def _count_stock(self, partition: int, txn: PartitionTransaction, tables: Tables, now: int) -> bool:
        """Bring the partition's stock totals up to date and tell the observer if they moved:
        counted by a scan of its store the first time after the partition was opened (a new
        StorePartition: assigned, or revived) or the channels table changed, then folded from
        what commits noted; the open reservations read from the store. True when that read
        wrote to the store (their index built for a store from before it)."""
        reservations, built = open_reservations(txn)
        stock = self._stock.get(partition)
        channels = frozenset(tables.channels)
        if stock is None or stock.store is not txn.partition or stock.channels != channels:
            for gone in [p for p, s in self._stock.items() if s.store.status is PartitionStatus.CLOSED]:
                del self._stock[gone]  # revoked: its totals went from the observer with its task
            stock = self._stock[partition] = StockTotals(txn.partition, channels)
            for sku in stocked_skus(txn):
                state = load_state(sku, txn)
                stock.update(sku, contribution(availability(state, tables, now), waiting(state)))
            stock.reserved(reservations)
        elif not stock.fold() | stock.reserved(reservations):  # (both run)
            return built
        self._observer.on_stock(self.name, partition, stock.snapshot())
        return built

    def availability_of(self, store: StorePartition, sku: str) -> Availability | None:
        """A SKU's availability from the store's committed state (a query; None: unknown SKU).

        The store holds only what committed transactions flushed, so this is what the
        `availability` topic last said or newer, never a batch still in flight. The read
        view is never flushed: it writes nothing. Safe from another thread: RocksDB reads
        are, and a partition closed meanwhile raises (the caller answers "moved").
        """
        view = PartitionTransaction(store)
        state = load_state(sku, view)
        if not state.balances and view.get(book_key(sku)) is None:
            return None
        now = self._clock()
        return availability(state, self._partition_tables(store.partition, view, now), now)

    def _dirty_skus(self, partition: int, txn: PartitionTransaction) -> dict[str, tuple[str, SkuState]]:
        # Keyed by the transaction object: an aborted batch's set is dropped with its txn.
        entry = self._dirty.get(partition)
        if entry is None or entry[0] is not txn:
            entry = self._dirty[partition] = (txn, {})
        return entry[1]

    def _reject_inventory(
        self, ctx: PartitionContext, source: Record | None, event: InventoryRejected
    ) -> None:
        """Dead-letter a refused inventory command with its bytes as they came, or, for one the
        engine issued itself (no input record), with the SKU's partition, offset -1 and no value."""
        error = f"inventory event refused: {event.reason}"
        if source is not None:
            topic, partition, offset, key, value = (
                source.topic,
                source.partition,
                source.offset,
                source.key,
                source.raw,
            )
        else:
            topic, partition, offset, key, value = (
                self._inventory_topic,
                ctx.partition,
                -1,
                event.sku.encode(),
                None,
            )
            error += f" (decided by the engine: {event.cause_event_id})"
        letter = {
            "event_id": event.event_id,
            "source_topic": topic,
            "partition": partition,
            "offset": offset,
            "key": key,
            "value": value,
            "error": error,
            "failed_at": event.decided_at,
        }
        ctx.emit(self._dead_letter_topic, key, self._dead_letters.encode(letter))
        self._observer.on_dead_letter(topic, REFUSED)


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
    if kind == "amend":
        return AmendLine(
            **common, qty=r["qty"], location=r["location"], lot=r["lot"], priority=r["priority"],
            region=r["region"], ship_complete=r["ship_complete"], reservation_ttl_s=r["reservation_ttl_s"],
        )  # fmt: skip
    if kind == "hold":
        return HoldLine(
            **common, qty=r["qty"], location=r["location"], lot=r["lot"], priority=r["priority"],
            region=r["region"], ttl_s=r["reservation_ttl_s"],
        )  # fmt: skip
    if kind == "confirm":
        return ConfirmLine(**common, reservation_ttl_s=r["reservation_ttl_s"])
    if kind == "extend":
        return ExtendHold(**common, ttl_s=r["reservation_ttl_s"])
    raise ValidationError(
        "command must be allocate, release, pick, fulfil, return, amend, hold, confirm or extend, "
        f"not {kind!r}"
    )


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
        expires_at = r["lot"].get("expires_at") if r["lot"] else None
        return Receive(**common, qty=r["qty"], lot=lot, reason=r["reason"], expires_at=expires_at)
    if kind == "adjusted":
        return Adjust(**common, qty=r["qty"], reason=r["reason"], lot=lot)
    if kind == "counted":
        return Count(**common, qty=r["qty"], reason=r["reason"], lot=lot)
    if kind == "expected":
        return Expect(**common, qty=r["qty"], eta=r["eta"], lot=lot, po_id=r["po_id"])
    if kind == "transfer_shipped":
        return ShipTransfer(
            **common, qty=r["qty"], destination=r["destination"], transfer_id=r["transfer_id"], eta=r["eta"],
            lot=lot,
        )  # fmt: skip
    if kind == "transfer_received":
        return ReceiveTransfer(**common, qty=r["qty"], transfer_id=r["transfer_id"], lot=lot)
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
            "incoming": view.incoming,
            "expired": view.expired,
            "at_risk": view.at_risk,
            "allocation_age_s": view.allocation_age_s,
            "backordered": view.backordered,
            "waiting_lines": view.waiting_lines,
            "in_transit": view.in_transit,
            "oldest_transfer_age_s": view.oldest_transfer_age_s,
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
                "incoming": row.incoming,
                "expired": row.expired,
                "at_risk": row.at_risk,
                "allocation_age_s": row.allocation_age_s,
                "in_transit": row.in_transit,
                "oldest_transfer_age_s": row.oldest_transfer_age_s,
            }
            for row in view.locations
        ],
        "channels": [
            {
                "channel": channel,
                "ats": ats,
                "atp": [{"until": until, "units": units} for until, units in view.atp.get(channel, ())],
            }
            for channel, ats in sorted(view.ats.items())
        ],
    }


def _command_of(record: Record) -> Command:
    command: Command = record.value
    return command


def _note_feed(txn: PartitionTransaction, feed: dict[str, int]) -> None:
    """Move each location's feed clock forward to the newest inventory event seen."""
    for location, at in feed.items():
        key = feed_key(location)
        seen = txn.get(key)
        if seen is None or int(seen) < at:
            txn.set(key, str(at).encode())
