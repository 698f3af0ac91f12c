"""Input records for the stage tests, as JSON bytes (every input topic accepts JSON)."""

from __future__ import annotations

import json
from typing import Any

from streamalloc.config import Settings
from streamalloc.domain import Tables
from streamalloc.serialization import topic_serde
from streamalloc.stages.tables import channel_of, location_of

SETTINGS = Settings()
T0 = 1_764_000_000_000
INVENTORY = SETTINGS.topic("inventory")
REQUESTS = SETTINGS.topic("allocation-requests")
ALLOCATIONS = SETTINGS.topic("allocations")
AVAILABILITY = SETTINGS.topic("availability")
STOCK_CHANGES = SETTINGS.topic("stock-changes")
DEAD_LETTER = SETTINGS.topic("dead-letter")
ORDER_STATUS = SETTINGS.topic("order-status")


def tables(*offline: str) -> Tables:
    """Two warehouses (WH-1 preferred: higher priority) and two channels; `offline` ones are offline."""
    return Tables(
        locations={
            lid: location_of(
                {"location_id": lid, "priority": 2 - n, "status": "offline" if lid in offline else "online"}
            )
            for n, lid in enumerate(("WH-1", "WH-2"))
        },
        channels={cid: channel_of({"channel_id": cid}) for cid in ("web", "marketplace")},
    )


def inventory(
    event_id: str, sku: str, location: str, qty: int, *, type: str = "received", **fields: Any
) -> bytes:
    record = {"event_id": event_id, "type": type, "sku": sku, "location": location, "qty": qty}
    return json.dumps({"occurred_at": T0, **record, **fields}).encode()


def request(
    order_id: str, line_id: str, sku: str, qty: int, *, command: str = "allocate", **fields: Any
) -> bytes:
    """An allocation-requests record (an internal topic: Avro only)."""
    record = {
        "event_id": f"{order_id}:{line_id}",
        "cause_event_id": order_id,
        "command": command,
        "order_id": order_id,
        "line_id": line_id,
        "sku": sku,
        "qty": qty,
        "channel": "web",
        "occurred_at": T0,
    }
    serde = topic_serde(SETTINGS, REQUESTS)
    return serde.encode(serde.validate({**record, **fields}))


def allocation(event_id: str, type: str, order_id: str, line_id: str | None = None, **fields: Any) -> bytes:
    """An allocations record as the allocator (or intake, for `accepted`) writes it."""
    record = {
        "event_id": event_id,
        "cause_event_id": order_id,
        "type": type,
        "order_id": order_id,
        "line_id": line_id,
        "sku": None if line_id is None else "SKU-A",
        "channel": "web",
        "qty": 1,
        "occurred_at": T0,
        "decided_at": T0,
        **fields,
    }
    serde = topic_serde(SETTINGS, ALLOCATIONS)
    return serde.encode(serde.validate(record))


def decoded(topic: str, value: bytes | None) -> dict[str, Any]:
    assert value is not None
    return topic_serde(SETTINGS, topic).decode(value, topic=topic)
