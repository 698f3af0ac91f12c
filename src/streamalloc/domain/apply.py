"""The single entry point: `apply(state, command, tables, now) -> Decision`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streamalloc.domain import amend, checkout, inventory, lines, promises, relocate, transfers
from streamalloc.domain.commands import (
    Adjust,
    AllocateLine,
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
    PickLine,
    Receive,
    ReceiveTransfer,
    ReleaseLine,
    ReturnLine,
    ShipTransfer,
    Sweep,
)
from streamalloc.domain.events import BACKORDERED, AllocationEvent, Decision, StockChanged
from streamalloc.domain.model import SkuState
from streamalloc.domain.tables import Tables

# Exact type -> handler: one dict lookup instead of a chain of isinstance checks.
_HANDLERS: dict[type, Callable[[SkuState, Any, Tables, int], Decision]] = {
    AllocateLine: lines.allocate_line,
    ReleaseLine: lines.release_line,
    PickLine: lines.pick_line,
    FulfilLine: lines.fulfil_line,
    ReturnLine: lines.return_line,
    AmendLine: amend.amend_line,
    HoldLine: checkout.hold_line,
    ConfirmLine: checkout.confirm_line,
    ExtendHold: checkout.extend_hold,
    Receive: inventory.receive,
    Adjust: inventory.adjust,
    Count: inventory.count,
    Expect: inventory.expect,
    Inspect: inventory.inspect,
    ShipTransfer: transfers.ship_transfer,
    ReceiveTransfer: transfers.receive_transfer,
    ExpireLine: lambda state, cmd, tables, now: relocate.expire(
        state, (cmd.order_id, cmd.line_id), cmd.occurred_at, tables, cmd.event_id, now
    ),
    Sweep: lambda state, cmd, tables, now: relocate.sweep(state, tables, cmd.event_id, cmd.occurred_at, now),
}


def apply(state: SkuState, command: Command, tables: Tables, now: int) -> Decision:
    """Decide `command` against `state`, updating `state` in place; `now` is decided_at (ms).

    Deterministic: the same state, command, tables and `now` give the same decision. The
    caller collects what changed with `state.take_changes()`. When lines wait, a decision
    that changed stock or made a line wait also publishes the promise dates it moved
    (promises.py); when none waits, nothing more is done.
    """
    handler = _HANDLERS.get(type(command))
    if handler is None:
        raise TypeError(f"not a domain command: {type(command).__name__}")
    if command.sku != state.sku:
        raise ValueError(f"command for SKU {command.sku!r} applied to the state of {state.sku!r}")
    decision = handler(state, command, tables, now)
    if not state.waiting:  # (the hot path: nobody waits, nothing is promised)
        return decision
    if type(command) in _SUPPLY:
        if any(isinstance(e, StockChanged) for e in decision):  # applied: supply or waiters moved
            return promises.restate(state, decision, command.event_id, command.occurred_at, now)
    elif any(isinstance(e, AllocationEvent) and e.type == BACKORDERED for e in decision):
        # a line started waiting (placed, or moved by a sweep, an expiry): it may rank ahead
        placing = command.order_id if isinstance(command, _ORDER_LINE) else None
        return promises.restate(state, decision, command.event_id, command.occurred_at, now, placing=placing)
    return decision


_ORDER_LINE = (
    AllocateLine, ReleaseLine, PickLine, FulfilLine, ReturnLine, AmendLine, HoldLine, ConfirmLine, ExtendHold,
)  # fmt: skip

#: The commands that change what is on its way, or serve waiting lines from what arrived.
_SUPPLY: frozenset[type] = frozenset({Receive, Adjust, Count, Expect, Inspect, ShipTransfer, ReceiveTransfer})
