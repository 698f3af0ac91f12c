"""Order stage: follows every order (allocations, keyed by order_id) with the domain's rules.

Each record is decoded into the domain's order event, applied to the order's state
(`domain.orders.apply`: ship-complete and whole-order cancel, and each line's status and
units), and the releases the rules ask for go out as allocation requests. `order-status`
goes out at most once per order per commit, from `before_commit`, once the order has one
(`domain.orders.status`).

A batch the embedded broker showed although it never committed (a crashed worker's last
batch, docs/exactly-once.md) reaches this stage as it runs: it cannot wait for the audit's
view of the whole history. The input's `batch` headers tell it (runtime/live_lineage.py):
at the first record of the incarnation that redid the batch's input, the orders that batch
touched are followed again without its events (`domain.orders.retract`), and get a new
status at this commit; a record of a batch already known void is left out. Without this,
a line backordered by the leaked batch stayed backordered when the redo rejected it (a
rejection of a decided line reads as a refused command), and a fill from one cause in the
leaked batch and from another in the redo counted the units twice.

On real Kafka (the `kafka` broker profile) a read_committed reader never sees such a
batch, so the stage neither reads the `batch` headers nor keeps the orders' history: an
order's record is then about half the size and the stage does a third less work per event.

Store: one record per order (key: order id), marshal of a versioned tuple. Version 5
keeps each line's units per location and lot, the order's placement ids and, where the
history is kept, each event applied as a flat tuple with its batch (the ids applied are
theirs); without the history it keeps the ids applied (a handful per order); and the order
edit being seen, if any (`OrderState.amending`). Records of version 4 (no edit), version 3
(the history as contract dicts, and the ids applied), version 2 (no history: nothing before
it can be taken back) and version 1 (see `_decode_v1`) still decode. One
more record, under `LINEAGE_KEY`, holds what the partition has seen of its writers' batches.
"""

from __future__ import annotations

import marshal
from collections.abc import Sequence
from dataclasses import fields
from operator import attrgetter
from typing import Any

from streamalloc.audit import TABLE_CAUSES
from streamalloc.config import Settings
from streamalloc.domain import AllocationEvent, OrderEvent, OrderLine, OrderState, ReleaseLine, orders
from streamalloc.domain.events import AmendRequested, CancelRequested, OrderAccepted, build_event
from streamalloc.domain.orders import History, HistoryEntry, Units
from streamalloc.errors import StateError, ValidationError
from streamalloc.runtime.live_lineage import LiveBatches
from streamalloc.runtime.stage import BaseStage, PartitionContext, Record
from streamalloc.runtime.state import PartitionTransaction
from streamalloc.serialization import topic_serde
from streamalloc.stages.records import AllocationRequest, order_event, order_status_record

STORE = "order-stage"
#: The store key of what the partition has seen of its writers' batches: it starts with a NUL
#: byte, which no order id of the channels' systems is expected to (ids are not checked for it).
LINEAGE_KEY = b"\x00lineage"
_V1 = 1
_V2 = 2
_V3 = 3
_V4 = 4
_V5 = 5  # version 4 and the order edit being seen (`OrderState.amending`)


class OrderStage(BaseStage):
    name = "order-stage"
    stores: Sequence[str] = (STORE,)

    def __init__(self, settings: Settings) -> None:
        # To take back what a batch that never committed decided: only a broker that can
        # show one needs it (see the module doc), and only there do the outputs carry the
        # headers it reads: one rule for the writer and this reader.
        self.reads_batches = settings.tags_outputs
        self._allocations_topic = settings.topic("allocations")
        self._requests_topic = settings.topic("allocation-requests")
        self._status_topic = settings.topic("order-status")
        self._allocations = topic_serde(settings, self._allocations_topic)
        self._requests = topic_serde(settings, self._requests_topic)
        self._status = topic_serde(settings, self._status_topic)
        # partition -> what the open transaction changed: each order followed since the
        # transaction began (decoded once, written once, at `before_commit`) and what the
        # partition has seen of its writers' batches. An aborted batch's orders go with its
        # transaction: the next one starts from the store again.
        self._open: dict[int, _Open] = {}
        # partition -> (its lineage record written at the last commit, the value it encodes):
        # the next transaction takes the value as it is while the store holds that very
        # record (the usual case) rather than decoding it again; a commit that failed after
        # `before_commit`, or another owner's writes in between, cost a decode. Taken out
        # when used, so an aborted transaction's changes to it go with it.
        self._lineage: dict[int, tuple[bytes, LiveBatches]] = {}

    def topics(self) -> Sequence[str]:
        return [self._allocations_topic]

    def decode(self, topic: str, key: bytes | None, value: bytes | None) -> OrderEvent:
        if value is None:
            raise ValidationError("an allocation event needs a value")
        return order_event(self._allocations.decode(value, topic=topic))

    def process(self, ctx: PartitionContext, records: list[Record]) -> None:
        txn = ctx.stores[STORE]
        open_ = self._open.get(ctx.partition)
        if open_ is None or open_.txn is not txn:
            open_ = self._open[ctx.partition] = _Open(txn)
        changed = open_.orders
        emit, encode, topic = ctx.emit, self._requests.encode, self._requests_topic
        keeps_history = self.reads_batches

        def order_of(order_id: str) -> OrderState:
            seen = changed.get(order_id)
            if seen is not None:
                return seen[1]
            data = txn.get(order_id.encode())
            if data is not None:
                return decode_order(data)
            return OrderState() if keeps_history else OrderState(history=None)

        def send(releases: tuple[ReleaseLine, ...], order: OrderState) -> None:
            for release in releases:
                request = AllocationRequest.release(release, order)
                emit(topic, release.sku.encode(), encode(request.as_record()))

        for record in records:
            event: OrderEvent = record.value
            order_id = event.order_id
            source = ""
            if record.batch is not None:
                lineage = open_.lineage
                if lineage is None:
                    lineage = open_.lineage = self._load_lineage(ctx.partition, txn)
                engine = isinstance(event, AllocationEvent) and event.cause_event_id.startswith(TABLE_CAUSES)
                found, voided = lineage.observe(record.batch, order_id, engine)
                for void_source, order_ids in voided.items():
                    for void_order_id in order_ids:
                        taken, releases = orders.retract(order_of(void_order_id), (void_source,))
                        send(releases, taken)
                        changed[void_order_id] = (_latest(taken, event.event_id), taken)
                if found is None:
                    continue  # a batch already known void: never applied
                source = found
            order = order_of(order_id)
            changed[order_id] = (event.event_id, order)
            send(orders.apply(order, event, source)[1], order)

    def before_commit(self, ctx: PartitionContext) -> None:
        open_ = self._open.pop(ctx.partition, None)
        txn = ctx.stores.get(STORE)
        if open_ is None or txn is None or open_.txn is not txn:
            return
        if open_.lineage is not None:
            data = marshal.dumps(open_.lineage.dump())
            txn.set(LINEAGE_KEY, data)
            self._lineage[ctx.partition] = (data, open_.lineage)
        for order_id, (cause, order) in open_.orders.items():
            txn.set(order_id.encode(), encode_order(order))
            status = orders.status(order)
            if status is not None:  # its status after the last batch of the commit that changed it
                record = order_status_record(order_id, order, status, cause)
                ctx.emit(self._status_topic, order_id.encode(), self._status.encode(record))

    def _load_lineage(self, partition: int, txn: PartitionTransaction) -> LiveBatches:
        kept = self._lineage.pop(partition, None)
        data = txn.get(LINEAGE_KEY)
        if kept is not None and data == kept[0]:
            return kept[1]
        return LiveBatches() if data is None else LiveBatches.load(marshal.loads(data))  # noqa: S302 - our own data


class _Open:
    """What one partition's open transaction changed (see `OrderStage.__init__`)."""

    __slots__ = ("lineage", "orders", "txn")

    def __init__(self, txn: PartitionTransaction) -> None:
        self.txn = txn
        #: order id -> (the id of the latest event applied, the order as it stands)
        self.orders: dict[str, tuple[str, OrderState]] = {}
        self.lineage: LiveBatches | None = None


# ---------------------------------------------------------------- store record


def encode_order(order: OrderState) -> bytes:
    """The store record of an order (version 5)."""
    lines = {
        line_id: (
            line.sku,
            line.qty,
            line.status,
            line.reason,
            line.returned,
            tuple(key + units for key, units in line.units.items()),  # (location, lot, soft, hard, shipped)
        )
        for line_id, line in order.lines.items()
    }
    history = order.history
    return marshal.dumps(
        (
            _V5,
            order.channel,
            order.line_count,
            order.ship_complete,
            order.placements,
            order.cancelled,
            order.ship_failed,
            order.decided_at,
            lines,
            # The ids applied are those of the history's events when it is kept.
            order.applied if history is None else None,
            None if history is None else history.entries(_compact_entry),
            order.amending,
        )
    )


def decode_order(data: bytes) -> OrderState:
    values: tuple[Any, ...] = marshal.loads(data)  # noqa: S302 - our own changelog data, marshal never runs code
    version = values[0]
    if version == _V1:
        return _decode_v1(values)
    if version == _V2:  # from before the history was kept: it stays unknown
        values = (*values, None, None)
    elif version == _V3 or version == _V4:  # from before order edits: none was being seen
        values = (*values, None)
    elif version != _V5:
        raise StateError(f"unknown order record version {values[0]}")
    (
        _,
        channel,
        line_count,
        ship_complete,
        placements,
        cancelled,
        ship_failed,
        decided_at,
        lines,
        applied,
        kept,
        amending,
    ) = values
    history: History | None
    if kept is None:
        history = None
    elif version >= _V4:  # expanded when read (`History`): most orders never are
        history = History(stored=kept, expand=_expand_entry)
        applied = {entry[1] for entry in kept}  # each kind's first field is its event id
    else:
        history = History((order_event(record), source) for record, source in kept)
    return OrderState(
        channel,
        line_count,
        ship_complete,
        placements,
        cancelled,
        ship_failed,
        decided_at,
        {
            line_id: OrderLine(sku, qty, status, reason, {u[:2]: Units._make(u[2:]) for u in units}, returned)
            for line_id, (sku, qty, status, reason, returned, units) in lines.items()
        },
        applied,
        history,
        amending,
    )


# An event of the history in a version 4 record: a flat tuple of its kind (the index below),
# its fields in their declared order, and its source. Half the bytes of the contract dict,
# and no field names to write or read.
_KINDS: tuple[type[OrderEvent], ...] = (AllocationEvent, OrderAccepted, CancelRequested, AmendRequested)
_FIELDS: tuple[tuple[str, ...], ...] = tuple(tuple(f.name for f in fields(cls)) for cls in _KINDS)
_KIND_OF = {
    cls: (kind, attrgetter(*names)) for kind, (cls, names) in enumerate(zip(_KINDS, _FIELDS, strict=True))
}


def _compact_entry(entry: HistoryEntry) -> tuple[Any, ...]:
    event, source = entry
    kind, values = _KIND_OF[type(event)]
    return (kind, *values(event), source)


def _expand_entry(entry: tuple[Any, ...]) -> HistoryEntry:
    kind = entry[0]
    event: OrderEvent = build_event(_KINDS[kind], dict(zip(_FIELDS[kind], entry[1:-1], strict=True)))
    return event, entry[-1]


def _latest(order: OrderState, default: str) -> str:
    """The id of the last event the order applied: the cause its status names."""
    last = None if order.history is None else order.history.last()
    return default if last is None else last[0].event_id


def _decode_v1(values: tuple[Any, ...]) -> OrderState:
    """A record from before units were kept per location (version 1).

    Its flags, line statuses and reasons carry over. It knew how many units a line held,
    not where, so its lines start with none: the events that follow move them from what
    they say (a release or shipment where nothing is known takes nothing), so the statuses
    stay right and the units the order status reports are those seen since the upgrade.
    Its placement ids are unknown: a rejection then decides as `domain.orders` says. Its
    history is unknown too: nothing before the upgrade can be taken back.
    """
    _, channel, line_count, ship_complete, cancelled, ship_failed, occurred_at, lines = values
    return OrderState(
        channel,
        line_count,
        ship_complete,
        (),
        cancelled,
        ship_failed,
        occurred_at,
        {
            line_id: OrderLine(sku, qty, status, reason)
            for line_id, (sku, qty, _, status, reason) in lines.items()
        },
        history=None,
    )
