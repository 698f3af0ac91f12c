"""The single entry point: `apply(state, command, tables, now) -> Decision`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streamalloc.domain import amend, checkout, inventory, lines, relocate
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
    ReleaseLine,
    ReturnLine,
    Sweep,
)
from streamalloc.domain.events import Decision
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
    ExpireLine: lambda state, cmd, tables, now: relocate.expire(
        state, (cmd.order_id, cmd.line_id), cmd.occurred_at, tables, cmd.event_id, now
    ),
    Sweep: lambda state, cmd, tables, now: relocate.sweep(state, tables, cmd.event_id, cmd.occurred_at, now),
}


def apply(state: SkuState, command: Command, tables: Tables, now: int) -> Decision:
    """Decide `command` against `state`, updating `state` in place; `now` is decided_at (ms).

    Deterministic: the same state, command, tables and `now` give the same decision. The
    caller collects what changed with `state.take_changes()`.
    """
    handler = _HANDLERS.get(type(command))
    if handler is None:
        raise TypeError(f"not a domain command: {type(command).__name__}")
    if command.sku != state.sku:
        raise ValueError(f"command for SKU {command.sku!r} applied to the state of {state.sku!r}")
    return handler(state, command, tables, now)
