"""The topics of the public contract (docs/contract.md, Topics), as specs the admin layer can create."""

from __future__ import annotations

from collections.abc import Iterable

from streamalloc.config import Settings
from streamalloc.kafka.admin import TopicSpec
from streamalloc.serialization.contract import CONTRACT

ORDERS = "orders"
INVENTORY = "inventory"
LOCATIONS = "locations"
CHANNELS = "channels"
KITS = "kits"  # kit SKU -> its components (a global table, read by intake and channel-sync)
ALLOCATION_REQUESTS = "allocation-requests"
ALLOCATIONS = "allocations"
AVAILABILITY = "availability"
ORDER_STATUS = "order-status"
STOCK_CHANGES = "stock-changes"
DEAD_LETTER = "dead-letter"
CHANNEL_ATS = "channel-ats"  # channel-sync's per-channel feed (compacted, keyed channel:sku)
FULFILMENT_REQUESTS = "fulfilment-requests"  # routing's requests (keyed order_id:location)
FULFILMENT_ACKS = "fulfilment-acks"  # a WMS acknowledges a request (keyed order_id); routing's auto-pick
TRANSFER_RECOMMENDATIONS = "transfer-recommendations"  # replenishment's advice (keyed sku)

#: Contract topics in the order `topics describe` shows them, with whether they are compacted.
CONTRACT_TOPICS: tuple[tuple[str, bool], ...] = tuple((name, c.compacted) for name, c in CONTRACT.items())

#: Global tables are read whole by every worker; one partition keeps their order total.
GLOBAL_TABLES = (LOCATIONS, CHANNELS, KITS)

#: Topics that must have the same partition count (one SKU lands on the same partition number).
COPARTITIONED = ((ALLOCATION_REQUESTS, INVENTORY),)
# (fulfilment-acks is created with the default partition count, as allocations is: routing
# reads both into one table keyed by order id.)

#: State stores of the engine's stages; each has a compacted changelog topic.
ENGINE_STORES = ("allocator", "order-stage")


def contract_specs(
    settings: Settings, *, channels: Iterable[str] = (), stores: Iterable[str] = ENGINE_STORES
) -> list[TopicSpec]:
    """Every topic the engine reads or writes, plus `orders.<channel>` for each named channel."""

    def spec(name: str, compacted: bool, partitions: int | None = None) -> TopicSpec:
        return TopicSpec(
            settings.topic(name),
            partitions or settings.partitions,
            settings.replication_factor,
            compacted,
        )

    specs = [
        spec(name, compacted, 1 if name in GLOBAL_TABLES else None) for name, compacted in CONTRACT_TOPICS
    ]
    specs += [spec(f"{ORDERS}.{channel}", False) for channel in channels]
    specs += [
        TopicSpec(settings.changelog_topic(store), settings.partitions, settings.replication_factor, True)
        for store in stores
    ]
    return specs


def copartitioned_groups(settings: Settings) -> list[tuple[str, ...]]:
    """Groups of topics that must share a partition count, changelogs with their stage's input."""
    groups = [tuple(settings.topic(name) for name in group) for group in COPARTITIONED]
    groups[0] += (settings.changelog_topic("allocator"),)
    groups.append((settings.topic(ALLOCATIONS), settings.changelog_topic("order-stage")))
    return groups
