"""Fulfilment requests per (order, location): the pure part of routing.

A warehouse picks per order at its own site, so routing turns an order's allocation
events into one request per (order, location) holding that location's lines, lots and
quantities. The order is followed with the domain's own rules (`domain.orders.apply`,
the order stage's), so a line's units per location and lot are exactly the allocator's.
Each request is published whole (absolute, keyed `order_id:location`) whenever what the
location must ship changes, and closed once the location holds nothing more for the
order: `fulfilled` when it shipped units of it, else `cancelled`. A split order yields
one request per location.

`Published` is what was last sent per location (with a revision that grows by one per
change), kept beside the order so a change is sent once, and a repeated input (at-least-
once delivery) re-sends the same absolute requests, never different ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from streamalloc.domain.orders import HOLDING, OrderState, status

RequestStatus = Literal["open", "cancelled", "fulfilled"]
OPEN: Final = "open"
CANCELLED: Final = "cancelled"
FULFILLED: Final = "fulfilled"

#: (line_id, sku, lot, qty, picked): one line's units at one lot of the location.
LineTuple = tuple[str, str, str | None, int, int]
#: location -> (revision, lines as last sent (empty once closed), its cause, its time).
Published = dict[str, tuple[int, tuple[LineTuple, ...], str, int]]


@dataclass(frozen=True, slots=True)
class FulfilmentRequest:
    """What one location must ship for one order (topic fulfilment-requests)."""

    order_id: str
    location: str
    channel: str
    status: RequestStatus
    revision: int
    lines: tuple[LineTuple, ...]
    cause_event_id: str
    updated_at: int

    @property
    def request_id(self) -> str:
        """The record key: one request per order and location."""
        return request_id(self.order_id, self.location)

    @property
    def event_id(self) -> str:
        """Derived from the allocation event that caused it and the revision it makes."""
        return f"{self.cause_event_id}:{self.request_id}:r{self.revision}"

    def as_record(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "cause_event_id": self.cause_event_id,
            "request_id": self.request_id,
            "order_id": self.order_id,
            "location": self.location,
            "channel": self.channel,
            "status": self.status,
            "revision": self.revision,
            "lines": [
                {"line_id": line_id, "sku": sku, "lot": lot, "qty": qty, "picked": picked}
                for line_id, sku, lot, qty, picked in self.lines
            ],
            "units": sum(line[3] for line in self.lines),
            "updated_at": self.updated_at,
        }


def request_id(order_id: str, location: str) -> str:
    return f"{order_id}:{location}"


def lines_per_location(order: OrderState) -> dict[str, tuple[LineTuple, ...]]:
    """The units each location holds for the order, per line and lot, in a stable order.

    A line held for a cart (a checkout hold, not yet confirmed) is nobody's to fulfil yet.
    """
    per: dict[str, list[LineTuple]] = {}
    for line_id, line in order.lines.items():
        if line.status == "held":
            continue
        for (location, lot), units in line.units.items():
            held = units.soft + units.hard
            if held > 0:
                per.setdefault(location, []).append((line_id, line.sku, lot, held, units.hard))
    return {location: tuple(sorted(rows, key=lambda r: (r[0], r[2] or ""))) for location, rows in per.items()}


def _shipped_at(order: OrderState, location: str) -> int:
    return sum(
        u.shipped for line in order.lines.values() for (loc, _), u in line.units.items() if loc == location
    )


def changed_requests(
    order_id: str, order: OrderState, published: Published, cause_event_id: str, now: int
) -> tuple[list[FulfilmentRequest], Published]:
    """The requests whose content changed since `published`, and what is published after them."""
    current = lines_per_location(order)
    after = dict(published)
    requests = []
    for location in sorted(set(current) | set(published)):
        revision, sent, _, _ = published.get(location, (0, (), "", 0))
        lines = current.get(location, ())
        if lines == sent:
            continue
        if lines:
            status: RequestStatus = OPEN
        else:
            status = FULFILLED if _shipped_at(order, location) > 0 else CANCELLED
        after[location] = (revision + 1, lines, cause_event_id, now)
        requests.append(
            FulfilmentRequest(
                order_id, location, order.channel, status, revision + 1, lines, cause_event_id, now
            )
        )
    return requests, after


def published_requests(order_id: str, order: OrderState, published: Published) -> list[FulfilmentRequest]:
    """Every request as last published, again (same ids): what a repeated input re-sends."""
    requests = []
    for location, (revision, lines, cause_event_id, at) in sorted(published.items()):
        if lines:
            status: RequestStatus = OPEN
        else:
            status = FULFILLED if _shipped_at(order, location) > 0 else CANCELLED
        requests.append(
            FulfilmentRequest(order_id, location, order.channel, status, revision, lines, cause_event_id, at)
        )
    return requests


def finished(order: OrderState, published: Published) -> bool:
    """Whether routing can forget the order: no request open, and none will open again.

    Its status is final (every line shipped, released or rejected), or it was never seen
    placed (an event about an order already forgotten, a late return say) and holds nothing
    nor waits for units. A request closed but an order whose other line still waits is kept:
    a later allocation at that location must publish the next revision, not revision 1 again.
    """
    if any(lines for _, lines, _, _ in published.values()) or lines_per_location(order):
        return False
    if order.line_count is None:
        return not any(line.status in HOLDING for line in order.lines.values())
    return status(order) in ("cancelled", "fulfilled", "rejected")


def pick_lines(published: Published, location: str, revision: int) -> list[tuple[str, str, str | None, int]]:
    """What an acknowledgement of `revision` at `location` picks: (line, sku, lot, soft units).

    Only the request as it stands: an ack of an older revision (the request changed since
    the location saw it) picks nothing, and units already picked are not picked again.
    """
    current, lines, _, _ = published.get(location, (0, (), "", 0))
    if current != revision:
        return []
    return [(line_id, sku, lot, qty - picked) for line_id, sku, lot, qty, picked in lines if qty > picked]
