"""How the allocator's SKU state sits in its store: one record per balance, line and event id.

Keys (NUL-joined parts, see runtime.state.keys):
    (sku, "b", location)            -> LocationBalance
    (sku, "l", order_id, line_id)   -> LineState
    (sku, "e", event_id)            -> marker: this inventory event was applied

Values are `marshal` dumps of tuples of plain values: written and read by C code only
(this is the hot path), and safe to load since marshal builds data, never runs it. The
format is stable across CPython 3.x; the tuple's shape is versioned by its first item.
"""

from __future__ import annotations

import marshal
from collections.abc import Iterator, Mapping

from streamalloc.domain import LinePart, LineState, LocationBalance, SkuState, StateChanges
from streamalloc.errors import StateError
from streamalloc.runtime.state import PartitionTransaction, decode_key, encode_key, prefix_of

_V1 = 1


def balance_key(sku: str, location: str) -> bytes:
    return encode_key(sku, "b", location)


def line_key(sku: str, order_id: str, line_id: str) -> bytes:
    return encode_key(sku, "l", order_id, line_id)


def event_key(sku: str, event_id: str) -> bytes:
    return encode_key(sku, "e", event_id)


def encode_balance(b: LocationBalance) -> bytes:
    return marshal.dumps((_V1, b.on_hand, b.allocated, b.picked, b.quality_control, b.damaged, b.incoming))


def decode_balance(data: bytes) -> LocationBalance:
    values = marshal.loads(data)  # noqa: S302 - our own changelog data, marshal never runs code
    if values[0] != _V1:
        raise StateError(f"unknown balance record version {values[0]}")
    return LocationBalance(*values[1:])


def encode_line(line: LineState) -> bytes:
    parts = tuple((p.location, p.allocated, p.picked, p.fulfilled, p.lot) for p in line.parts)
    return marshal.dumps(
        (
            _V1,
            line.channel,
            line.qty,
            line.status,
            parts,
            line.returned,
            line.reason,
            tuple(line.applied),
            line.decided_at,
        )
    )


def decode_line(order_id: str, line_id: str, data: bytes) -> LineState:
    values = marshal.loads(data)  # noqa: S302 - see encode_balance
    if values[0] != _V1:
        raise StateError(f"unknown line record version {values[0]}")
    _, channel, qty, status, parts, returned, reason, applied, decided_at = values
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
    )


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
    return SkuState(
        sku, balances=balances, lines=StoredLines(sku, txn), applied_events=StoredEvents(sku, txn)
    )


def write_changes(sku: str, changes: StateChanges, txn: PartitionTransaction) -> None:
    for location, balance in changes.balances.items():
        txn.set(balance_key(sku, location), encode_balance(balance))
    for (order_id, line_id), line in changes.lines.items():
        txn.set(line_key(sku, order_id, line_id), encode_line(line))
    for event_id in changes.applied_events:
        txn.set(event_key(sku, event_id), b"1")
