"""The pure allocation core: SKU state, commands, events and the policies between them.

Nothing here touches Kafka, Avro, RocksDB, HTTP or the clock: a decision is
`apply(state, command, tables, now)`, deterministic in its arguments. See `model` for how
the state maps onto store records and how changes are reported for write-back.
"""

from streamalloc.domain import reasons
from streamalloc.domain.allocate import channel_ats, choose_locations
from streamalloc.domain.apply import apply
from streamalloc.domain.commands import (
    FAIL,
    PASS,
    Adjust,
    AllocateLine,
    Command,
    Count,
    EngineCommand,
    Expect,
    ExpireLine,
    FulfilLine,
    Inspect,
    InspectResult,
    InventoryCommand,
    LineCommand,
    PickLine,
    Receive,
    ReleaseLine,
    ReturnLine,
    Sweep,
)
from streamalloc.domain.contention import contend
from streamalloc.domain.events import (
    DUPLICATE,
    AllocationEvent,
    AllocationEventType,
    Decision,
    Event,
    InventoryEventType,
    InventoryRejected,
    StockChanged,
)
from streamalloc.domain.model import (
    LineKey,
    LinePart,
    LineState,
    LineStatus,
    LocationBalance,
    Lot,
    SkuBook,
    SkuState,
    StateChanges,
    WaitEntry,
)
from streamalloc.domain.tables import (
    DEFAULT_CHANNEL,
    OFFLINE,
    ONLINE,
    Channel,
    Location,
    LocationStatus,
    Tables,
)
from streamalloc.domain.views import Availability, LocationAvailability, availability

__all__ = [
    "DEFAULT_CHANNEL",
    "DUPLICATE",
    "FAIL",
    "OFFLINE",
    "ONLINE",
    "PASS",
    "Adjust",
    "AllocateLine",
    "AllocationEvent",
    "AllocationEventType",
    "Availability",
    "Channel",
    "Command",
    "Count",
    "Decision",
    "Event",
    "EngineCommand",
    "Expect",
    "ExpireLine",
    "FulfilLine",
    "Inspect",
    "InspectResult",
    "InventoryCommand",
    "InventoryEventType",
    "InventoryRejected",
    "LineCommand",
    "LineKey",
    "LinePart",
    "LineState",
    "LineStatus",
    "Location",
    "LocationAvailability",
    "LocationBalance",
    "LocationStatus",
    "Lot",
    "PickLine",
    "Receive",
    "ReleaseLine",
    "ReturnLine",
    "SkuBook",
    "SkuState",
    "StateChanges",
    "StockChanged",
    "Sweep",
    "Tables",
    "WaitEntry",
    "apply",
    "availability",
    "channel_ats",
    "choose_locations",
    "contend",
    "reasons",
]
