"""How the allocator's SKU state sits in its store: one record per balance, line and event id.

Keys (NUL-joined parts, see runtime.state.keys):
    (sku, "b", location)            -> LocationBalance (with its lots)
    (sku, "s")                      -> SkuBook: units held per channel, the waitlist, open transfers
    (sku, "l", order_id, line_id)   -> LineState
    (sku, "e", event_id)            -> marker: this inventory event was applied
    ("#loc", location, sku)         -> marker: the SKU has a balance at the location
    ("#t", due, sku, order, line)   -> marker: the line's reservation expires at `due`
    ("#r", channel, second)         -> the channel's open reservations decided in that second
    ("#reserved",)                  -> per channel: open reservations and their decided_at summed
    ("#f", location)                -> the newest inventory event time seen for the location
    ("#swept",)                     -> the unusable locations the partition was last swept for

The "#" keys are the partition's indexes: a table change finds the SKUs at a location,
the expiry timers are read in due order, and the metrics read each channel's open
reservations (their count, summed age and oldest), without scanning every SKU.

Values are `marshal` dumps of tuples of plain values: written and read by C code only
(this is the hot path), and safe to load since marshal builds data, never runs it. The
format is stable across CPython 3.x; the tuple's shape is versioned by its first item.
"""

from __future__ import annotations

import marshal
from collections.abc import Iterator, Mapping

from streamalloc.domain import (
    LinePart,
    LineState,
    LocationBalance,
    Lot,
    SkuBook,
    SkuState,
    StateChanges,
    Supply,
    Transfer,
    WaitEntry,
)
from streamalloc.domain.events import ALLOCATED
from streamalloc.errors import StateError
from streamalloc.runtime.observer import Reservations
from streamalloc.runtime.state import PartitionTransaction, decode_key, encode_key, prefix_of

_V1 = 1
_V2 = 2  # balances: held_ms and lots; lines: expires_at
_V1_ENTRY = 13  # a waitlist entry's fields in book layout 1 (layout 2 adds promised_at)
_DUE_DIGITS = 15  # epoch ms fit in 15 digits until the year 33658: keys sort by due time


def balance_key(sku: str, location: str) -> bytes:
    return encode_key(sku, "b", location)


def line_key(sku: str, order_id: str, line_id: str) -> bytes:
    return encode_key(sku, "l", order_id, line_id)


def event_key(sku: str, event_id: str) -> bytes:
    return encode_key(sku, "e", event_id)


def book_key(sku: str) -> bytes:
    return encode_key(sku, "s")


def location_index_key(location: str, sku: str) -> bytes:
    return encode_key("#loc", location, sku)


def timer_key(due: int, sku: str, order_id: str, line_id: str) -> bytes:
    return encode_key("#t", f"{due:0{_DUE_DIGITS}d}", sku, order_id, line_id)


def reservation_key(channel: str, decided_at: int) -> bytes:
    """The key counting the channel's open reservations decided in `decided_at`'s second."""
    return encode_key("#r", channel, f"{decided_at // 1000:0{_DUE_DIGITS}d}")


def feed_key(location: str) -> bytes:
    return encode_key("#f", location)


TIMERS = prefix_of("#t")
_SWEPT = encode_key("#swept")
_RESERVED = encode_key("#reserved")


def swept_locations(txn: PartitionTransaction) -> frozenset[str]:
    """The unusable locations the partition's SKUs were last swept for (none at first)."""
    data = txn.get(_SWEPT)
    return frozenset() if data is None else frozenset(marshal.loads(data))  # noqa: S302 - see encode_balance


def note_swept(txn: PartitionTransaction, locations: frozenset[str]) -> None:
    txn.set(_SWEPT, marshal.dumps(tuple(sorted(locations))))


def skus_at(location: str, txn: PartitionTransaction) -> list[str]:
    """The SKUs of this partition with a balance at `location`."""
    return [decode_key(key)[2] for key, _ in txn.iter_prefix(prefix_of("#loc", location))]


def stocked_skus(txn: PartitionTransaction) -> list[str]:
    """The SKUs of this partition with a balance at any location (each once, in key order)."""
    found: dict[str, None] = {}
    for key, _ in txn.iter_prefix(prefix_of("#loc")):
        found[decode_key(key)[2]] = None
    return list(found)


def due_timers(txn: PartitionTransaction, now: int, limit: int) -> list[tuple[bytes, int, str, str, str]]:
    """Up to `limit` expiry timers due at `now`: (key, due, sku, order_id, line_id), in due order."""
    found: list[tuple[bytes, int, str, str, str]] = []
    for key, _ in txn.iter_prefix(TIMERS):
        _, due, sku, order_id, line_id = decode_key(key)
        if int(due) > now or len(found) >= limit:
            break
        found.append((key, int(due), sku, order_id, line_id))
    return found


def encode_balance(b: LocationBalance) -> bytes:
    lots = (
        None
        if b.lots is None
        else {k: (v.on_hand, v.held, v.received_at, v.expires_at) for k, v in b.lots.items()}
    )
    return marshal.dumps(
        (_V2, b.on_hand, b.allocated, b.picked, b.quality_control, b.damaged, b.incoming, b.held_ms, lots)
    )


def decode_balance(data: bytes) -> LocationBalance:
    values = marshal.loads(data)  # noqa: S302 - our own changelog data, marshal never runs code
    if values[0] == _V2:
        lots = values[8]
        on_hand, allocated, picked, quality_control, damaged, incoming, held_ms = values[1:8]
        return LocationBalance(
            on_hand,
            allocated,
            picked,
            quality_control,
            damaged,
            incoming,
            held_ms,
            None if lots is None else {k: Lot(*v) for k, v in lots.items()},
        )
    if values[0] != _V1:
        raise StateError(f"unknown balance record version {values[0]}")
    return LocationBalance(*values[1:])


def encode_book(book: SkuBook) -> bytes:
    if not (book.transfers or book.expected or any(e.promised_at is not None for e in book.waitlist)):
        # (a book without transfers, purchase orders or promises keeps the layout it always had)
        return marshal.dumps(
            (_V1, book.channel_held, [tuple(e)[:_V1_ENTRY] for e in book.waitlist], book.seq)
        )
    transfers = {k: tuple(t) for k, t in book.transfers.items()}
    expected = {k: tuple(s) for k, s in book.expected.items()}
    waitlist = [tuple(e) for e in book.waitlist]
    return marshal.dumps((_V2, book.channel_held, waitlist, book.seq, transfers, expected))


def decode_book(data: bytes) -> SkuBook:
    values = marshal.loads(data)  # noqa: S302 - see encode_balance
    if values[0] == _V2:  # open transfers, purchase orders, waiting lines' promised dates
        transfers = {k: Transfer(*t) for k, t in values[4].items()}
        expected = {k: Supply(*s) for k, s in values[5].items()}
    elif values[0] == _V1:
        transfers, expected = {}, {}
    else:
        raise StateError(f"unknown book record version {values[0]}")
    return SkuBook(dict(values[1]), [WaitEntry(*e) for e in values[2]], values[3], transfers, expected)


def encode_line(line: LineState) -> bytes:
    parts = tuple((p.location, p.allocated, p.picked, p.fulfilled, p.lot) for p in line.parts)
    return marshal.dumps(
        (
            _V2,
            line.channel,
            line.qty,
            line.status,
            parts,
            line.returned,
            line.reason,
            tuple(line.applied),
            line.decided_at,
            line.expires_at,
        )
    )


def decode_line(order_id: str, line_id: str, data: bytes) -> LineState:
    values = marshal.loads(data)  # noqa: S302 - see encode_balance
    if values[0] == _V1:
        values = (*values, None)
    elif values[0] != _V2:
        raise StateError(f"unknown line record version {values[0]}")
    _, channel, qty, status, parts, returned, reason, applied, decided_at, expires_at = values
    return LineState(
        order_id,
        line_id,
        channel,
        qty,
        status,
        tuple(LinePart(*part) for part in parts),
        returned,
        reason,
        list(applied),
        decided_at,
        expires_at,
    )


def _open_as(data: bytes | None) -> tuple[str, int] | None:
    """(channel, decided_at) of a stored line that holds an open reservation (status
    `allocated`), else None: decoded only that far."""
    if data is None:
        return None
    values = marshal.loads(data)  # noqa: S302 - see encode_balance
    # (version, channel, qty, status, parts, returned, reason, applied, decided_at, ...)
    return (values[1], values[8]) if values[3] == ALLOCATED else None


def open_reservations(txn: PartitionTransaction) -> tuple[dict[str, Reservations], bool]:
    """Each channel's open reservations in the partition (channels with none left out), and
    whether this call wrote to the transaction: the count and the summed `decided_at` are one
    record, the oldest (to the second: the start of it) is the channel's first "#r" key. A
    store without them (written before they existed) gets them built here, once."""
    built = txn.get(_RESERVED) is None
    found = {}
    for channel, (lines, decided_ms_sum) in _reservation_totals(txn).items():
        oldest = None
        for key, _ in txn.iter_prefix(prefix_of("#r", channel)):
            oldest = int(decode_key(key)[2]) * 1000
            break
        found[channel] = Reservations(lines, oldest, decided_ms_sum)
    return found, built


def _reservation_totals(txn: PartitionTransaction) -> dict[str, list[int]]:
    """Channel -> [open reservations, their decided_at summed], built if the store has none."""
    data = txn.get(_RESERVED)
    return _build_reservations(txn) if data is None else marshal.loads(data)  # noqa: S302


def _build_reservations(txn: PartitionTransaction) -> dict[str, list[int]]:
    """Count every open reservation of the partition and write the totals: one read of every
    line record of the stocked SKUs (a line holding units has a balance somewhere)."""
    for key, _ in txn.iter_prefix(prefix_of("#r")):  # (none unless the totals record was lost)
        txn.delete(key)
    totals: dict[str, list[int]] = {}
    for sku in stocked_skus(txn):
        for _, value in txn.iter_prefix(prefix_of(sku, "l")):
            reserved = _open_as(value)
            if reserved is not None:
                _count_reserved(txn, totals, reserved, 1)
    txn.set(_RESERVED, marshal.dumps(totals))
    return totals


def _count_reserved(
    txn: PartitionTransaction, totals: dict[str, list[int]], reserved: tuple[str, int], sign: int
) -> None:
    """Count one open reservation in (sign 1) or out (-1): its second's key and the totals."""
    channel, decided_at = reserved
    key = reservation_key(channel, decided_at)
    data = txn.get(key)
    n = sign if data is None else int(data) + sign
    if n:
        txn.set(key, b"%d" % n)
    else:
        txn.delete(key)
    counts = totals.get(channel)
    if counts is None:
        counts = totals[channel] = [0, 0]
    counts[0] += sign
    counts[1] += sign * decided_at
    if not counts[0]:
        del totals[channel]


class StoredLines(Mapping[tuple[str, str], LineState]):
    """A SKU's order lines, read from the store only when a command names one."""

    __slots__ = ("_sku", "_txn")

    def __init__(self, sku: str, txn: PartitionTransaction) -> None:
        self._sku = sku
        self._txn = txn

    def get(self, key: tuple[str, str], default: LineState | None = None) -> LineState | None:  # type: ignore[override]
        data = self._txn.get(line_key(self._sku, key[0], key[1]))
        return default if data is None else decode_line(key[0], key[1], data)

    def __getitem__(self, key: tuple[str, str]) -> LineState:
        line = self.get(key)
        if line is None:
            raise KeyError(key)
        return line

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for key, _ in self._txn.iter_prefix(prefix_of(self._sku, "l")):
            parts = decode_key(key)
            yield (parts[2], parts[3])

    def __len__(self) -> int:
        return sum(1 for _ in self)


class StoredEvents:
    """Inventory event ids applied to a SKU, one store record each."""

    __slots__ = ("_sku", "_txn")

    def __init__(self, sku: str, txn: PartitionTransaction) -> None:
        self._sku = sku
        self._txn = txn

    def __contains__(self, event_id: object) -> bool:
        return isinstance(event_id, str) and self._txn.get(event_key(self._sku, event_id)) is not None


def load_state(sku: str, txn: PartitionTransaction) -> SkuState:
    """The SKU's state as the transaction sees it: balances loaded, lines and events on demand."""
    balances = {
        decode_key(key)[2]: decode_balance(value) for key, value in txn.iter_prefix(prefix_of(sku, "b"))
    }
    book = txn.get(book_key(sku))
    return SkuState(
        sku,
        balances=balances,
        lines=StoredLines(sku, txn),
        applied_events=StoredEvents(sku, txn),
        book=None if book is None else decode_book(book),
    )


#: What the allocator keeps of a SKU between transactions (runtime.state.kept): its balances
#: and book. Its lines and applied events stay in the store, read when a command names one.
KeptSku = tuple[dict[str, LocationBalance], SkuBook]


def kept_state(sku: str, txn: PartitionTransaction, kept: KeptSku | None) -> SkuState:
    """The SKU's state as `txn` sees it, from what was kept of it, else from the store."""
    if kept is None:
        return load_state(sku, txn)
    lines, events = StoredLines(sku, txn), StoredEvents(sku, txn)
    return SkuState(sku, balances=kept[0], lines=lines, applied_events=events, book=kept[1])


def to_keep(state: SkuState) -> KeptSku:
    """What to keep of `state` once its changes are written (shared, not copied)."""
    return state.balances, state.book


def write_changes(sku: str, changes: StateChanges, txn: PartitionTransaction) -> None:
    for location, balance in changes.balances.items():
        txn.set(balance_key(sku, location), encode_balance(balance))
    for location in changes.new_locations:
        txn.set(location_index_key(location, sku), b"1")
    totals = None  # the open reservations' totals, read when a line opens or closes one
    for (order_id, line_id), line in changes.lines.items():
        key = line_key(sku, order_id, line_id)
        was = _open_as(txn.get(key))
        now = (line.channel, line.decided_at) if line.status == ALLOCATED else None
        if was != now:
            if totals is None:
                totals = _reservation_totals(txn)
            if was is not None:
                _count_reserved(txn, totals, was, -1)
            if now is not None:
                _count_reserved(txn, totals, now, 1)
        txn.set(key, encode_line(line))
        if line.expires_at is not None:
            # The timer exists while the line holds soft units; a fired or moot one goes.
            key = timer_key(line.expires_at, sku, order_id, line_id)
            if line.allocated > 0:
                txn.set(key, b"1")
            else:
                txn.delete(key)
    for event_id in changes.applied_events:
        txn.set(event_key(sku, event_id), b"1")
    if changes.book is not None:
        txn.set(book_key(sku), encode_book(changes.book))
    if totals is not None:
        txn.set(_RESERVED, marshal.dumps(totals))
