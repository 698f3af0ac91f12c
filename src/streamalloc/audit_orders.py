"""The audit's order-status check: each order's last `order-status` against its events.

An order's events are the committed `allocations` records about it, repeats of an event
id left out, in topic order: `accepted`, `cancel_requested` and the decisions about its
lines. Followed with the order stage's own rules (`domain.orders`), they give the order's
final state, and its status: none while a line has no decision yet, or while releases
the order's rules asked for (a cancel, a failed ship-complete) have not been applied.

An order's last `order-status` record **agrees** with its events when:

- the events give the order a status, and the record has that status, and lists exactly
  the lines the events name, each with the status the events give it and, as
  `allocated`, the units it holds at the end (soft and hard), which are also what the
  audit's own replay of the line's units gives; or
- the events give the order no status, and it has no record either: an order whose lines
  are not all decided has no status yet, and a decided line never becomes undecided.

Records the order stage dead-letters (an unknown type, a line event without its line)
are left out here as there. Every order with events or a record is checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from streamalloc.domain import OrderState, orders
from streamalloc.errors import ValidationError
from streamalloc.stages.records import order_event

#: What an allocations record has when a field is left out (the schema's defaults).
_DEFAULTS: Mapping[str, Any] = {
    "line_id": None,
    "sku": None,
    "qty": 0,
    "location": None,
    "lot": None,
    "reason": None,
    "line_count": None,
    "ship_complete": False,
    "occurred_at": 0,
    "decided_at": 0,
}


class Breaches(Protocol):
    def breach(self, text: str) -> None: ...


def check_order_statuses(
    report: Breaches,
    allocations: Iterable[Mapping[str, Any]],
    statuses: Iterable[Mapping[str, Any]],
    held: Mapping[tuple[str, str], int],
) -> int:
    """Breach every order whose last status does not agree with its events (module doc);
    `held` is the units each (order, line) holds at the end by the audit's replay. Returns
    how many orders were checked."""
    followed: dict[str, OrderState] = {}
    seen: set[str] = set()
    for record in allocations:
        if record["event_id"] in seen:
            continue
        seen.add(record["event_id"])
        try:
            event = order_event({**_DEFAULTS, **record})
        except ValidationError:
            continue  # the order stage dead-letters it
        order = followed.get(event.order_id)
        if order is None:
            order = followed[event.order_id] = OrderState()
        orders.apply(order, event)
    last: dict[str, Mapping[str, Any]] = {}
    for status in statuses:
        last[status["order_id"]] = status
    for order_id in followed.keys() | last.keys():
        _check(report, order_id, followed.get(order_id, OrderState()), last.get(order_id), held)
    return len(followed.keys() | last.keys())


def _check(
    report: Breaches,
    order_id: str,
    order: OrderState,
    record: Mapping[str, Any] | None,
    held: Mapping[tuple[str, str], int],
) -> None:
    expected = orders.status(order)
    if expected is None:
        if record is not None:
            report.breach(
                f"order {order_id}: its last order-status says {record['status']}, but its events give it "
                "no status (a line without a decision, or its releases not applied)"
            )
        return
    if record is None:
        report.breach(f"order {order_id}: its events give it status {expected}, but it has no order-status")
        return
    if record["status"] != expected:
        report.breach(
            f"order {order_id}: its last order-status says {record['status']}, its events {expected}"
        )
    listed = {line["line_id"]: line for line in record["lines"]}
    if listed.keys() != order.lines.keys():
        report.breach(
            f"order {order_id}: its last order-status lists lines {sorted(listed)}, "
            f"its events name {sorted(order.lines)}"
        )
    for line_id, line in order.lines.items():
        row = listed.get(line_id)
        if row is None:
            continue
        if row["status"] != line.status:
            report.breach(
                f"order {order_id} line {line_id}: its last order-status says {row['status']}, "
                f"its events {line.status}"
            )
        replayed = held.get((order_id, line_id), 0)
        if not row["allocated"] == line.held == replayed:
            report.breach(
                f"order {order_id} line {line_id}: its last order-status says {row['allocated']} unit(s) "
                f"allocated, its events {line.held}, the audit's replay of its units {replayed}"
            )
