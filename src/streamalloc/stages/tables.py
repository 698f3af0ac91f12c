"""The global tables (decoded `locations`, `channels` and `kits` records) as the domain's values."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from streamalloc.domain import Channel, Location, Tables
from streamalloc.domain.kits import Kit
from streamalloc.domain.tables import DEFAULT_HOLD_TTL_S, LOT_POLICIES, LotPolicy

TablesProvider = Callable[[], Tables]
KitsProvider = Callable[[], Mapping[str, Kit]]


def location_of(record: Mapping[str, Any]) -> Location:
    return Location(
        location_id=record["location_id"],
        status="online" if record.get("status", "online") == "online" else "offline",
        priority=record.get("priority", 0),
        region=record.get("region"),
        regions_served=frozenset(record.get("regions_served") or ()),
        safety_stock=record.get("safety_stock", 0),
        freshness_limit_s=record.get("freshness_limit_s"),
    )


def channel_of(record: Mapping[str, Any]) -> Channel:
    allowed = record.get("locations")
    return Channel(
        channel_id=record["channel_id"],
        priority=record.get("priority", 0),
        safety_stock=record.get("safety_stock", 0),
        pool_share=record.get("pool_share"),
        backorder_limit=record.get("backorder_limit", 0),
        locations=None if allowed is None else frozenset(allowed),
        allow_split=record.get("allow_split", False),
        waitlist=record.get("waitlist", False),
        allow_partial=record.get("allow_partial", False),
        lot_policy=_lot_policy(record.get("lot_policy")),
        priority_window_ms=max(0, record.get("priority_window_ms") or 0),
        hold_ttl_s=record.get("hold_ttl_s", DEFAULT_HOLD_TTL_S),
        protected_units=max(0, record.get("protected_units") or 0),
    )


def _lot_policy(value: Any) -> LotPolicy | None:
    """FIFO, FEFO or LIFO in any case; anything else reads as no policy (the default)."""
    if not isinstance(value, str):
        return None
    upper = value.upper()
    for policy in LOT_POLICIES:
        if policy == upper:
            return policy
    return None


class TablesView:
    """Domain Tables rebuilt only when a global table changed (`version` bumps)."""

    def __init__(self, locations: Any, channels: Any) -> None:
        self._locations = locations  # GlobalTable: .rows (decoded records), .version
        self._channels = channels
        self._seen = (-1, -1)
        self._tables = Tables()

    def __call__(self) -> Tables:
        seen = (self._locations.version, self._channels.version)
        if seen != self._seen:
            self._tables = Tables(
                locations={k: location_of(v) for k, v in self._locations.rows.items()},
                channels={k: channel_of(v) for k, v in self._channels.rows.items()},
            )
            self._seen = seen
        return self._tables


def kit_of(record: Mapping[str, Any]) -> Kit | None:
    """The kit of a `kits` record; None (not a kit: its lines stay plain SKU lines) when it is
    inactive, lists no component, a unit count below one, the kit itself or a SKU twice."""
    components = tuple((c["sku"], c["qty"]) for c in record.get("components") or ())
    skus = {sku for sku, _ in components}
    if (
        not record.get("active", True)
        or not components
        or any(qty < 1 for _, qty in components)
        or record["kit_sku"] in skus
        or len(skus) != len(components)
    ):
        return None
    return Kit(record["kit_sku"], components)


def kits_of(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, Kit]:
    """The kits table as intake reads it, kit SKU -> Kit, from its rows (row id -> the row's
    record, a deleted row absent): the rows that are kits (an inactive or invalid record is
    none, and hides an earlier record of that kit SKU, as a tombstone does)."""
    return {sku: kit for sku, record in rows.items() if (kit := kit_of(record)) is not None}


class KitsView:
    """The kits table as kit SKU -> Kit, rebuilt only when it changed (`version` bumps)."""

    def __init__(self, kits: Any) -> None:
        self._kits = kits  # GlobalTable: .rows (decoded records), .version
        self._seen = -1
        self._view: Mapping[str, Kit] = {}

    def __call__(self) -> Mapping[str, Kit]:
        if self._kits.version != self._seen:
            self._view = kits_of(self._kits.rows)
            self._seen = self._kits.version
        return self._view
